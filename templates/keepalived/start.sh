#!/bin/sh
# keepalived in the foreground, VRRP only, logging to the container's output.
# A container started again (restart policy, `docker start`) keeps its /run, and
# keepalived refuses to start ("daemon is already running") when a pid file of the
# previous run names a live process, which in a fresh PID namespace it does: the
# numbers start over. The addresses a killed predecessor left on the interface are
# keepalived's to remove: it does so when it enters BACKUP at startup.
#
# LB_ADDRESS (the shared address): also on loopback, host scope, on every LB host,
# whoever holds it (docs/lb-pair.md, "Requests in flight"). keepalived moves the
# address on the lab interface; an LB that just lost it there still has answers to
# send from it (the requests it accepted an instant before), and the kernel sends
# nothing from an address that is on none of its interfaces. On loopback it stays
# this host's own without being announced: the lab makes the LB hosts answer ARP only
# for addresses on the interface asked (arp_ignore 1) and never name an address of
# another interface in their own requests (arp_announce 2). Without both, the address
# on loopback would be announced from every LB host: it is then left off, and said so.
set -eu
rm -f /run/keepalived.pid /run/vrrp.pid /run/checkers.pid /run/bfd.pid
mkdir -p /run/keepalived
# A hand-over cut short (its `docker exec` killed) may have left new connections held.
/usr/local/bin/vrrp-handover lift
if [ -n "${LB_ADDRESS:-}" ]; then
    ignore=$(cat /proc/sys/net/ipv4/conf/all/arp_ignore)
    announce=$(cat /proc/sys/net/ipv4/conf/all/arp_announce)
    if [ "$ignore" -ge 1 ] && [ "$announce" -ge 2 ]; then
        ip addr replace "$LB_ADDRESS/32" dev lo scope host
    else
        echo "start.sh: $LB_ADDRESS not put on loopback: this host answers ARP for addresses of any interface (net.ipv4.conf.all.arp_ignore=$ignore, arp_announce=$announce; the lab sets 1 and 2), so requests in flight when the address moves are lost" >&2
    fi
fi
exec keepalived --dont-fork --log-console --log-detail --vrrp \
    --use-file=/etc/keepalived/keepalived.conf
