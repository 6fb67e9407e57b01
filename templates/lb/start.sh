#!/bin/bash
# The seed's start.sh (nginx, then consul-template rewriting its upstreams),
# made to survive the night. It runs under tini (PID 1), which reaps orphans.
#  - nginx starts on the last configuration that passed `nginx -t`, kept on the
#    state volume, so after any restart (docker restart, the restart policy, a
#    reboot of the host) it serves from its first second, also while Consul is
#    away; only a first start ever serves the placeholder.
#  - The renders of the previous run are deleted: consul-template writes nothing
#    and runs no command when a render equals the file on disk, so a render
#    that survived a restart would never reach nginx through lb-reload. Both
#    templates share this one consul-template: service.ctmpl (nginx's
#    upstreams and locations, command lb-reload) and health.ctmpl (every
#    instance's Consul health for the LB's page, no command); the health file
#    is deleted too, so the page never shows a health older than this start.
#  - When nginx's master or consul-template exits, the other is stopped and the
#    container exits non-zero: the restart policy starts both again, on the
#    last good configuration.
#  - consul-template: -consul-retry-attempts=0 retries Consul forever while
#    nginx keeps the last good configuration (safe only from 0.19.4 on: 0.19.0
#    to 0.19.3 overflow their backoff, hashicorp/consul-template#1028); -wait is
#    quiescence, so a flapping check cannot cause a reload storm;
#    -kill-signal=SIGTERM because 0.19 ignores `docker stop`'s SIGTERM.
set -u
state=/var/lib/lb                    # the state volume: survives the container
live=/etc/nginx/conf.d/service.conf  # what nginx runs
render=/run/lb/service.rendered      # consul-template's destination
health=$state/health.json            # its second: served at /_lab/health.json
placeholder=/etc/nginx/lab/placeholder.conf

mkdir -p "$state" /run/lb
for counter in reloads rejected reload_failures; do
    [ -s "$state/$counter" ] || echo 0 > "$state/$counter"
done
rm -f "$state/reload-failed"   # a reload the previous nginx did not take: this one starts afresh
# /_lab/ answers the lab's networks besides loopback.
for cidr in ${LB_ALLOW_CIDRS}; do echo "allow $cidr;"; done > /etc/nginx/lab/allow.conf

if [ -s "$state/service.conf" ]; then
    cp "$state/service.conf" "$live"
else
    cp "$placeholder" "$live"
fi
if ! nginx -t -q 2>"$state/last-error"; then
    echo "start.sh: the last good configuration fails nginx -t (a new image?); serving the placeholder" >&2
    cat "$state/last-error" >&2
    cp "$placeholder" "$live"
fi
cp "$live" "$state/service.conf.tmp" && mv "$state/service.conf.tmp" "$state/service.conf"
rm -f "$render" "$health"
lb-publish   # lb.json: the upstreams nginx starts on

# With ACLs, consul-template's token comes from a root-only file (roles/lb.py), not a
# command line; CONSUL_TOKEN would win over CONSUL_HTTP_TOKEN in 0.19, so it goes.
unset CONSUL_TOKEN
if [ -s /run/secrets/consul-template.token ]; then
    CONSUL_HTTP_TOKEN=$(cat /run/secrets/consul-template.token)
    export CONSUL_HTTP_TOKEN
fi

nginx -g 'daemon off;' &
nginx_pid=$!
consul-template \
    -consul-addr="${CONSUL_URL}" \
    -template="/templates/service.ctmpl:${render}:/usr/local/bin/lb-reload" \
    -template="/templates/health.ctmpl:${health}" \
    -wait="${LB_WAIT}" \
    -consul-retry-attempts=0 \
    -consul-retry-max-backoff=10s \
    -kill-signal=SIGTERM \
    -pid-file=/run/lb/consul-template.pid \
    -log-level="${LB_LOG_LEVEL}" &
ct_pid=$!

stop_both() {
    kill -TERM "$ct_pid" 2>/dev/null
    kill -QUIT "$nginx_pid" 2>/dev/null   # graceful: in-flight requests finish
    wait
}
trap 'stop_both; exit 0' TERM INT

wait -n "$nginx_pid" "$ct_pid"
status=$?
if kill -0 "$nginx_pid" 2>/dev/null; then gone=consul-template; else gone="nginx's master"; fi
echo "start.sh: $gone exited (status $status); stopping the other, the restart policy starts both again" >&2
stop_both
exit 1
