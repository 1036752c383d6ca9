export * from "./api.ts";
export * from "./decode.ts";
export * from "./envelope.ts";
export * from "./events.ts";
export * from "./http.ts";
export * from "./topics.ts";
