// The floor of a proxy hop in Go, for gateway-cost.ts to compare the gateway with: net/http in, the bearer
// token's HS256 signature and exp checked, httputil.ReverseProxy out. Build: go build -o /tmp/hop-floor-go .
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	secret := []byte(os.Getenv("AUTH_SECRET"))
	up, _ := url.Parse(os.Getenv("ORDER_SERVICE_URL"))
	proxy := httputil.NewSingleHostReverseProxy(up)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	verify := func(auth string) bool {
		if !strings.HasPrefix(auth, "Bearer ") {
			return false
		}
		parts := strings.Split(auth[7:], ".")
		if len(parts) != 3 {
			return false
		}
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(parts[0] + "." + parts[1]))
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
			return false
		}
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var c struct {
			Exp int64 `json:"exp"`
		}
		return json.Unmarshal(payload, &c) == nil && c.Exp > time.Now().Unix()
	}
	http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" {
			w.Write([]byte(`{"status":"UP"}`))
			return
		}
		if !verify(r.Header.Get("Authorization")) {
			w.WriteHeader(401)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
}
