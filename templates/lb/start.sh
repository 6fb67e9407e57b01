#!/bin/sh
# The seed's start.sh: nginx, then consul-template rewriting its upstreams.
#  - nginx starts on a placeholder so it serves (/, stub_status) before Consul answers;
#  - -consul-retry-attempts=0: retry Consul forever, keeping the last good config;
#  - -wait: quiescence, so a flapping check cannot cause a reload storm;
#  - -kill-signal=SIGTERM: v0.19 otherwise ignores `docker stop`'s SIGTERM.
set -eu
mkdir -p /var/lib/lb
echo 0 > /var/lib/lb/reloads
echo 0 > /var/lib/lb/rejected
: > /etc/nginx/conf.d/service.conf
cp /etc/nginx/conf.d/service.conf /var/lib/lb/service.conf
nginx
exec consul-template \
    -consul-addr="${CONSUL_URL}" \
    -template="/templates/service.ctmpl:/var/lib/lb/service.rendered:/usr/local/bin/lb-reload" \
    -wait="${LB_WAIT}" \
    -consul-retry-attempts=0 \
    -consul-retry-max-backoff=10s \
    -kill-signal=SIGTERM \
    -log-level="${LB_LOG_LEVEL}"
