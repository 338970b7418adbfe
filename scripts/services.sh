#!/usr/bin/env bash
# Start/stop the local services the tests and the demo need, in the background:
# a real OpenSearch (fetched with Maven, cached) and a moto server (fake AWS/S3).
#
# Usage: scripts/services.sh start|stop|restart [opensearch|moto]   (default: both)
#        scripts/services.sh status
#
#   start    start what is not already running and answering; wait until it answers
#   stop     stop the OpenSearch on OPENSEARCH_PORT (any engine) and the moto on MOTO_PORT
#            started by this script
#   status   list the services started here (all engines/ports under RUN_DIR)
#
# Environment (default):
#   ENGINE           opensearch-2.19.6   <engine>-<version>: opensearch-1.3.x, -2.x, -3.x
#   OPENSEARCH_PORT  9200                HTTP port; the transport port is OPENSEARCH_PORT+100
#   MOTO_PORT        5000
#   OPENSEARCH_HEAP  512m
#   CACHE_DIR        $HOME/.cache/cloudtrail-to-elasticsearch  downloaded + unpacked distributions
#   RUN_DIR          <repo>/.services    pid files, console logs, one home/data/logs per engine+port
#   MOTO_SERVER      <repo>/.venv/bin/moto_server if present, else moto_server on PATH
#   START_TIMEOUT    180 (seconds)
#   SERVICE_USER     ctes                unprivileged user OpenSearch runs as when run by root
#   SERVICE_JAVA_HOME                    override the JDK (default: Java 21+ for OpenSearch 3.x,
#                                        else the system `java`)
set -euo pipefail
shopt -s inherit_errexit   # keep -e inside $(...) too

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE=${ENGINE:-opensearch-2.19.6}
OPENSEARCH_PORT=${OPENSEARCH_PORT:-9200}
MOTO_PORT=${MOTO_PORT:-5000}
OPENSEARCH_HEAP=${OPENSEARCH_HEAP:-512m}
CACHE_DIR=${CACHE_DIR:-$HOME/.cache/cloudtrail-to-elasticsearch}
RUN_DIR=${RUN_DIR:-$REPO/.services}
START_TIMEOUT=${START_TIMEOUT:-180}
SERVICE_USER=${SERVICE_USER:-ctes}
JAVA21_HOME=${JAVA21_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}   # OpenSearch 3.x needs Java 21+
if [[ -z ${MOTO_SERVER:-} ]]; then
  MOTO_SERVER=moto_server
  [[ -x $REPO/.venv/bin/moto_server ]] && MOTO_SERVER=$REPO/.venv/bin/moto_server
fi

ENGINE_NAME=${ENGINE%%-*}
ENGINE_VERSION=${ENGINE#*-}
OS_ID=$ENGINE-$OPENSEARCH_PORT    # one home (hard-linked distribution + config/data/logs) per engine+port
OS_HOME=$RUN_DIR/$OS_ID
MOTO_ID=moto-$MOTO_PORT

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes ---------------------------------------------------------------------------------

# A pid is alive if it exists and is not a zombie.
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

# Something that identifies our process in its command line (guards against stale pid files
# and pid reuse).
marker() {
  case $1 in
    moto-*) echo "-p ${1##*-} " ;;
    *) echo "$RUN_DIR/$1/" ;;   # bin/opensearch, then java (-cp <home>/lib/*) of that home
  esac
}

# Print the pid recorded for service id $1 if it is alive and really ours.
live_pid() {
  local pid
  pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$(marker "$1")" && echo "$pid"
}

stop_id() {
  local pid i
  if pid=$(live_pid "$1"); then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do alive "$pid" || break; sleep 0.5; done
    if alive "$pid"; then log "$1 did not stop in 30 s, killing"; kill -9 "$pid" 2>/dev/null || true; fi
    log "$1 stopped (pid $pid)"
  fi
  rm -f "$RUN_DIR/$1.pid"
}

# Wait until `$2` succeeds; on death or timeout show the log tail, stop the process and fail.
wait_up() {
  local id=$1 check=$2 pid=${3:-} deadline=$((SECONDS + START_TIMEOUT))
  until $check; do
    if [[ -n $pid ]] && ! alive "$pid"; then
      log "$id exited during start-up; end of $RUN_DIR/$id.log:"
      tail -n 40 "$RUN_DIR/$id.log" >&2
      rm -f "$RUN_DIR/$id.pid"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "$id not answering after ${START_TIMEOUT}s; end of $RUN_DIR/$id.log:"
      tail -n 40 "$RUN_DIR/$id.log" >&2
      stop_id "$id"
      exit 1
    fi
    sleep 1
  done
}

# --- checks ------------------------------------------------------------------------------------

os_up() {
  curl -sf -m 10 "http://127.0.0.1:$OPENSEARCH_PORT/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null
}
os_version() {  # version number of whatever answers on OPENSEARCH_PORT
  { curl -s -m 5 "http://127.0.0.1:$OPENSEARCH_PORT/" || true; } | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p'
}
http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" || true; }
moto_up() { [[ $(http_code "http://127.0.0.1:$MOTO_PORT/moto-api/") != 000 ]]; }

# --- OpenSearch --------------------------------------------------------------------------------

# Download (once) and unpack (once) the distribution into CACHE_DIR; print its directory.
fetch_dist() {
  local dist=$CACHE_DIR/$ENGINE zip=$CACHE_DIR/downloads/$ENGINE.zip artifact tmp
  if [[ -x $dist/bin/$ENGINE_NAME ]]; then echo "$dist"; return; fi
  case $ENGINE_NAME in
    opensearch) artifact=org.opensearch.distribution.integ-test-zip:opensearch:$ENGINE_VERSION:zip ;;
  esac
  mkdir -p "$CACHE_DIR/downloads"
  if [[ ! -s $zip ]]; then
    log "fetching $artifact with mvn"
    tmp=$(mktemp -d "$CACHE_DIR/downloads/.mvn.XXXXXX")
    if ! (cd "$tmp" && mvn -B org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
      -Dartifact="$artifact" -DoutputDirectory="$tmp" >mvn.log 2>&1); then
      tail -n 30 "$tmp/mvn.log" >&2
      rm -rf "$tmp"
      die "mvn could not fetch $artifact"
    fi
    mv "$tmp"/*.zip "$zip"
    rm -rf "$tmp"
  fi
  log "unpacking $zip"
  tmp=$(mktemp -d "$CACHE_DIR/.unpack.XXXXXX")
  unzip -q "$zip" -d "$tmp" || { rm -rf "$tmp"; die "cannot unzip $zip (delete it to re-download)"; }
  chmod -R a+rX "$tmp"
  chmod a+x "$tmp"/*/bin/*
  rm -rf "$dist"
  mv "$tmp"/* "$dist"
  rmdir "$tmp"
  echo "$dist"
}

java_home() {
  if [[ -n ${SERVICE_JAVA_HOME:-} ]]; then echo "$SERVICE_JAVA_HOME"; return; fi
  case $ENGINE in
    opensearch-[3-9].*) echo "$JAVA21_HOME" ;;
    *) dirname "$(dirname "$(readlink -f "$(command -v java)")")" ;;
  esac
}

# The user OpenSearch runs as (it refuses to run as root) and the command prefix to become it.
as_user=()
setup_user() {
  ((EUID == 0)) || return 0
  id -u "$SERVICE_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVICE_USER"
  as_user=(setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups --)
}

# Per engine+port home: a hard-linked copy of the cached distribution (so that the service user
# needs no access to CACHE_DIR, which is often under root's private home), with its own config,
# data, logs and tmp dirs owned by the service user.
prepare_home() {
  local dist=$1 tmp
  if [[ ! -d $OS_HOME/lib ]]; then
    tmp=$OS_HOME.new
    rm -rf "$tmp"
    cp -al "$dist" "$tmp" 2>/dev/null || { rm -rf "$tmp"; cp -a "$dist" "$tmp"; }
    rm -rf "$tmp/config"
    cp -a "$dist/config" "$tmp/config"   # a real copy: it is written to
    chmod a+rx "$RUN_DIR" "$tmp"
    rm -rf "$OS_HOME"
    mv "$tmp" "$OS_HOME"
  fi
  mkdir -p "$OS_HOME/data" "$OS_HOME/logs" "$OS_HOME/tmp"
  cat >"$OS_HOME/config/opensearch.yml" <<EOF
# written by scripts/services.sh on each start
cluster.name: ctes-$OS_ID
node.name: $OS_ID
network.host: 127.0.0.1
http.port: $OPENSEARCH_PORT
transport.port: $((OPENSEARCH_PORT + 100))
discovery.type: single-node
path.data: $OS_HOME/data
path.logs: $OS_HOME/logs
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  if ((EUID == 0)); then
    chown -R "$SERVICE_USER:" "$OS_HOME/config" "$OS_HOME/data" "$OS_HOME/logs" "$OS_HOME/tmp"
    "${as_user[@]}" test -x "$OS_HOME/bin/opensearch" ||
      die "user $SERVICE_USER cannot reach $OS_HOME; set RUN_DIR to a directory outside a private home"
  fi
}

start_opensearch() {
  local pid version dist jh
  case $ENGINE in
    opensearch-[1-9].*) ;;
    elasticsearch-*) die "ENGINE=$ENGINE: Elasticsearch is not supported yet" ;;
    *) die "ENGINE=$ENGINE: expected opensearch-<version>, e.g. opensearch-2.19.6" ;;
  esac
  if pid=$(live_pid "$OS_ID"); then log "$OS_ID already running (pid $pid)"; echo "$pid"; return; fi
  version=$(os_version)
  if [[ -n $version ]]; then
    [[ $version == "$ENGINE_VERSION" ]] ||
      die "port $OPENSEARCH_PORT already answers with version $version, not $ENGINE; stop it first"
    log "$ENGINE already answers on port $OPENSEARCH_PORT (not started by this script)"
    return
  fi
  dist=$(fetch_dist)
  setup_user
  prepare_home "$dist"
  jh=$(java_home)
  [[ -x $jh/bin/java ]] || die "no java in $jh (set SERVICE_JAVA_HOME)"
  log "starting $OS_ID (java: $jh, heap: $OPENSEARCH_HEAP)"
  nohup "${as_user[@]}" env JAVA_HOME="$jh" OPENSEARCH_JAVA_HOME="$jh" \
    OPENSEARCH_PATH_CONF="$OS_HOME/config" OPENSEARCH_TMPDIR="$OS_HOME/tmp" \
    OPENSEARCH_JAVA_OPTS="-Xms$OPENSEARCH_HEAP -Xmx$OPENSEARCH_HEAP" \
    "$OS_HOME/bin/opensearch" </dev/null >"$RUN_DIR/$OS_ID.log" 2>&1 9>&- &
  echo $! >"$RUN_DIR/$OS_ID.pid"   # the scripts exec, so this becomes the java pid
  echo $!
}

# --- moto --------------------------------------------------------------------------------------

start_moto() {
  local pid
  if pid=$(live_pid "$MOTO_ID"); then log "$MOTO_ID already running (pid $pid)"; echo "$pid"; return; fi
  if moto_up; then log "port $MOTO_PORT already answers (not started by this script)"; return; fi
  command -v "$MOTO_SERVER" >/dev/null || die "$MOTO_SERVER not found: pip install 'moto[server]' or set MOTO_SERVER"
  log "starting $MOTO_ID ($MOTO_SERVER)"
  nohup "$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$RUN_DIR/$MOTO_ID.log" 2>&1 9>&- &
  echo $! >"$RUN_DIR/$MOTO_ID.pid"
  echo $!
}

# --- commands ----------------------------------------------------------------------------------

lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  flock 9
}

cmd_start() {
  local os_pid moto_pid
  lock
  [[ $WHICH == moto ]] || os_pid=$(start_opensearch)
  [[ $WHICH == opensearch ]] || moto_pid=$(start_moto)
  [[ $WHICH == opensearch ]] || wait_up "$MOTO_ID" moto_up "$moto_pid"
  [[ $WHICH == moto ]] || wait_up "$OS_ID" os_up "$os_pid"
  log "up: $WHICH (OpenSearch: $ENGINE on http://127.0.0.1:$OPENSEARCH_PORT, moto: http://127.0.0.1:$MOTO_PORT)"
}

cmd_stop() {
  local f
  lock
  if [[ $WHICH != moto ]]; then
    for f in "$RUN_DIR"/*-"$OPENSEARCH_PORT".pid; do   # whatever engine runs on that port
      [[ -e $f && $f != */moto-* ]] && stop_id "$(basename "$f" .pid)"
    done
  fi
  [[ $WHICH == opensearch ]] || stop_id "$MOTO_ID"
}

cmd_status() {
  local f id pid port state
  for f in "$RUN_DIR"/*.pid; do
    [[ -e $f ]] || { echo "nothing started by services.sh in $RUN_DIR"; return; }
    id=$(basename "$f" .pid) port=${id##*-}
    if pid=$(live_pid "$id"); then state="running (pid $pid)"; else state="not running (stale pid file)"; fi
    case $id in
      moto-*) state+=", http $(http_code "http://127.0.0.1:$port/moto-api/")" ;;
      *) state+=", $(curl -s -m 5 "http://127.0.0.1:$port/_cluster/health" | grep -o '"status":"[a-z]*"' || echo 'not answering')" ;;
    esac
    echo "$id: $state"
  done
}

WHICH=${2:-all}
[[ $WHICH =~ ^(all|opensearch|moto)$ ]] || set -- help
case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 2 ;;
esac
