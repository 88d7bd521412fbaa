#!/usr/bin/env bash
# Make sure every service the tests talk to is running and configured.
# Idempotent: safe to run on a fresh machine and again on a warm one.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }

pg_ver=$(ls /etc/postgresql | sort -n | tail -1)
psql_q() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc "$1"; }

if ! pg_isready -h 127.0.0.1 -q; then
  log "starting PostgreSQL $pg_ver"
  pg_ctlcluster --skip-systemctl-redirect "$pg_ver" main start || true
fi
for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -q && break; sleep 0.5; done

# Logical replication needs wal_level=logical; several parallel test workers
# need room for slots, senders and connections.
need_restart=0
want() {  # want NAME VALUE: set with ALTER SYSTEM when different
  local cur; cur=$(psql_q "show $1")
  if [ "$cur" != "$2" ]; then
    log "setting $1=$2 (was $cur)"
    psql_q "ALTER SYSTEM SET $1 = '$2'"
    need_restart=1
  fi
}
want wal_level logical
want max_replication_slots 64
want max_wal_senders 64
want max_connections 300
want track_commit_timestamp on
if [ "$need_restart" = 1 ]; then
  log "restarting PostgreSQL to apply settings"
  pg_ctlcluster --skip-systemctl-redirect "$pg_ver" main restart
  for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -q && break; sleep 0.5; done
fi

if ! mariadb -uroot -h 127.0.0.1 -e 'select 1' >/dev/null 2>&1; then
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do mariadb -uroot -h 127.0.0.1 -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
fi

# Binlog change capture (the mariadb/mysql source) needs a row-based binary log with full images
# and column names in the table maps. The settings live in a file of their own, included from
# my.cnf; the server is restarted only when a running value differs (log_bin cannot be set live).
maria_q() { mariadb -uroot -h 127.0.0.1 -N -B -e "$1"; }
maria_conf_dir=/etc/mysql/mariadb.conf.d
if [ -f /etc/mysql/my.cnf ] && ! grep -q "^!includedir $maria_conf_dir" /etc/mysql/my.cnf; then
  log "including $maria_conf_dir from /etc/mysql/my.cnf"
  printf '\n!includedir %s/\n' "$maria_conf_dir" >>/etc/mysql/my.cnf
fi
mkdir -p "$maria_conf_dir"
cat >"$maria_conf_dir/60-binlog.cnf" <<'CNF'
# Written by scripts/services.sh: binlog change capture for tidesync's mariadb/mysql source.
[mariadbd]
server_id = 1
log_bin = mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
# keep two days of binlog: a source stopped for longer must re-snapshot
binlog_expire_logs_seconds = 172800
CNF
maria_want="ON ROW FULL FULL 1 172800"
maria_have=$(maria_q "select concat_ws(' ', if(@@log_bin, 'ON', 'OFF'), @@binlog_format, @@binlog_row_image,
  @@binlog_row_metadata, @@server_id, @@binlog_expire_logs_seconds)" 2>/dev/null || echo none)
if [ "$maria_have" != "$maria_want" ]; then
  log "restarting MariaDB for binlog settings (was: $maria_have)"
  mariadb-admin -uroot -h 127.0.0.1 shutdown || true
  for _ in $(seq 1 120); do [ -e /run/mysqld/mysqld.pid ] || break; sleep 0.25; done
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 120); do mariadb -uroot -h 127.0.0.1 -e 'select 1' >/dev/null 2>&1 && break; sleep 0.25; done
fi

if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  log "starting NATS"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  log "starting Mosquitto"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
fi

log "ready: postgres $(psql_q 'show wal_level'), mariadb, redis, nats, mosquitto, rabbitmq"
