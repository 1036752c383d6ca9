#!/bin/bash
# The floor of a proxy hop in C, for gateway-cost.ts to compare the gateway with: nginx (Debian's package,
# not installed by the project) as a bare reverse proxy with upstream keep-alive, no token check. One
# process in the foreground, so that its CPU is the pid's.
set -euo pipefail
dir=$(mktemp -d)
cat >"$dir/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log $dir/error.log; pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  upstream up { server ${ORDER_SERVICE_URL#http://}; keepalive 64; }
  server {
    listen 127.0.0.1:$PORT;
    location = /ready { return 200 '{"status":"UP"}'; }
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
exec /usr/sbin/nginx -c "$dir/nginx.conf" -p "$dir"
