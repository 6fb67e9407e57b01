#!/bin/sh
# keepalived in the foreground, VRRP only, logging to the container's output.
# A container started again (restart policy, `docker start`) keeps its /run, and
# keepalived refuses to start ("daemon is already running") when a pid file of the
# previous run names a live process, which in a fresh PID namespace it does: the
# numbers start over. The addresses a killed predecessor left on the interface are
# keepalived's to remove: it does so when it enters BACKUP at startup.
set -eu
rm -f /run/keepalived.pid /run/vrrp.pid /run/checkers.pid /run/bfd.pid
mkdir -p /run/keepalived
exec keepalived --dont-fork --log-console --log-detail --vrrp \
    --use-file=/etc/keepalived/keepalived.conf
