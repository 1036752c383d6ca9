/**
 * The floor of a proxy hop in Node, for `gateway-cost.ts` to compare the gateway with: `node:http` in
 * and out (a keep-alive `http.Agent`), the bearer token's HS256 signature and `exp` checked, the body
 * piped both ways. None of the gateway's other work (routing, admission, rate limits, metrics, logs).
 *
 *   node tools/system/src/bench/gateway-cost.ts tools/system/src/bench/hop-floor/proxy.ts post 3000 100 30000
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { Agent, createServer, type IncomingHttpHeaders, request } from "node:http";

const secret = process.env.AUTH_SECRET ?? "";
const upstream = new URL(process.env.ORDER_SERVICE_URL ?? "http://127.0.0.1:1");
const agent = new Agent({ keepAlive: true, maxSockets: 64 });

function authorized(headers: IncomingHttpHeaders): boolean {
  const [header, payload, signature] = (headers.authorization ?? "").replace(/^Bearer /, "").split(".");
  if (!header || !payload || !signature) return false;
  const mac = createHmac("sha256", secret).update(`${header}.${payload}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== mac.length || !timingSafeEqual(given, mac)) return false;
  const { exp } = JSON.parse(Buffer.from(payload, "base64url").toString()) as { exp?: number };
  return typeof exp === "number" && exp > Date.now() / 1000;
}

createServer((req, res) => {
  if (req.url === "/ready") return void res.end('{"status":"UP"}');
  if (!authorized(req.headers)) {
    res.statusCode = 401;
    return void res.end("{}");
  }
  const forwarded = request(
    {
      agent,
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: { ...req.headers, host: upstream.host },
    },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  forwarded.on("error", () => {
    res.statusCode = 502;
    res.end("{}");
  });
  req.pipe(forwarded);
}).listen(Number(process.env.PORT), "127.0.0.1");

process.on("SIGTERM", () => process.exit(0));
