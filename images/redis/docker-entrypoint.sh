#!/bin/sh
# Like the official redis image: `redis-server [options]` runs as the redis user, in the foreground, on all
# interfaces without protected mode (the compose network is the boundary); anything else is run as given.
set -e
case "$1" in -*) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
    shift
    exec setpriv --reuid=redis --regid=redis --init-groups \
        redis-server --bind "* -::*" --protected-mode no --daemonize no --dir /data "$@"
fi
exec "$@"
