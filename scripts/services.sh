#!/usr/bin/env bash
# Start/stop the local services the tests and the demo need, in the background:
# a real search engine, OpenSearch or Elasticsearch (fetched with Maven, cached), and a moto
# server (fake AWS/S3).
#
# Usage: scripts/services.sh start|stop|restart [opensearch|moto]   (default: both)
#        scripts/services.sh status
#
#   start    start what is not already running and answering; wait until it answers
#   stop     stop the search engine on OPENSEARCH_PORT (any engine; every node of a cluster
#            started there) and the moto on MOTO_PORT started by this script
#   status   list the services started here (all engines/ports under RUN_DIR)
#   "opensearch" stands for the search engine, whichever ENGINE it is.
#
# NODES=3 starts a cluster of three nodes instead of one (OpenSearch, or Elasticsearch 7+,
# without ES_SECURITY): node i (0, 1, 2) answers HTTP on OPENSEARCH_PORT + i and talks to the
# others on transport port OPENSEARCH_PORT + 100 + i; each is named <ENGINE>-<its HTTP port>,
# has its own home, data and pid file under RUN_DIR, and is data and cluster-manager eligible
# (discovery.seed_hosts: the three transport ports; the first start bootstraps the cluster with
# all three as initial cluster managers). `start` starts the nodes not running (e.g. one
# killed), then waits until the cluster has all its nodes; `stop` stops them all. A home whose
# data was written by another layout (single node, or another cluster) is emptied first.
#
# Environment (default):
#   ENGINE           opensearch-2.19.6   <engine>-<version>: opensearch-1.3.x, -2.x, -3.x, or
#                                        elasticsearch-6.8.x, -7.x, -8.x, -9.x (the minimal
#                                        "integ-test-zip" builds: no ingest-common, painless,
#                                        analysis-common, ILM, ML... modules)
#   OPENSEARCH_PORT  9200                HTTP port of any engine; transport port is that + 100
#   NODES            1                   nodes of the cluster, on consecutive ports (see above)
#   MOTO_PORT        5000
#   OPENSEARCH_HEAP  512m
#   CACHE_DIR        $HOME/.cache/cloudtrail-to-elasticsearch  downloaded + unpacked distributions
#   RUN_DIR          <repo>/.services    pid files, console logs, one home/data/logs per engine+port
#   MOTO_SERVER      <repo>/.venv/bin/moto_server if present, else moto_server on PATH
#   START_TIMEOUT    180 (seconds)
#   SERVICE_USER     ctes                unprivileged user the engine runs as when run by root
#   SERVICE_JAVA_HOME                    override the JDK (default: JAVA21_HOME for OpenSearch 3.x
#                                        and Elasticsearch 9.x, else the system `java`, which
#                                        must be 17..23 for Elasticsearch 6.8 to 8.17: they need
#                                        the SecurityManager, gone in Java 24; 9.0.0 fails on 25)
#   JAVA21_HOME      /usr/lib/jvm/temurin-25-jdk-amd64
#   ES_SECURITY      false               Elasticsearch 7.17+/8.x/9.x only: true = HTTPS (self-signed
#                                        CA, path shown by `status`) and basic auth as `elastic`
#   ES_PASSWORD      changeme            the password of `elastic` when ES_SECURITY=true
#   OS_SECURITY      false               OpenSearch 2.x/3.x only: true = the opensearch-security
#                                        plugin of the same version (<version>.0, from Maven
#                                        Central) with its demo configuration: HTTPS (CA
#                                        config/root-ca.pem of the home, shown by `status`) and
#                                        basic auth as `admin`. Use a port of its own: the plugin
#                                        and its security index stay in that port's home.
#   OS_ADMIN_PASSWORD Cloud-Trail-Logs-71 the password of `admin` at the first start of a home with
#                                        OS_SECURITY=true (later ones keep what the security
#                                        index has); the demo tool wants upper and lower case
#                                        letters, a digit and a special character
set -euo pipefail
shopt -s inherit_errexit   # keep -e inside $(...) too

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE=${ENGINE:-opensearch-2.19.6}
OPENSEARCH_PORT=${OPENSEARCH_PORT:-9200}
NODES=${NODES:-1}
MOTO_PORT=${MOTO_PORT:-5000}
OPENSEARCH_HEAP=${OPENSEARCH_HEAP:-512m}
CACHE_DIR=${CACHE_DIR:-$HOME/.cache/cloudtrail-to-elasticsearch}
RUN_DIR=${RUN_DIR:-$REPO/.services}
START_TIMEOUT=${START_TIMEOUT:-180}
SERVICE_USER=${SERVICE_USER:-ctes}
JAVA21_HOME=${JAVA21_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}   # OpenSearch 3.x, ES 9.x need 21+
ES_SECURITY=${ES_SECURITY:-false}
ES_PASSWORD=${ES_PASSWORD:-changeme}
OS_SECURITY=${OS_SECURITY:-false}
OS_ADMIN_PASSWORD=${OS_ADMIN_PASSWORD:-Cloud-Trail-Logs-71}
if [[ -z ${MOTO_SERVER:-} ]]; then
  MOTO_SERVER=moto_server
  [[ -x $REPO/.venv/bin/moto_server ]] && MOTO_SERVER=$REPO/.venv/bin/moto_server
fi

ENGINE_NAME=${ENGINE%%-*}
ENGINE_VERSION=${ENGINE#*-}
ENGINE_MAJOR=${ENGINE_VERSION%%.*}
MOTO_ID=moto-$MOTO_PORT

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $NODES =~ ^[1-9]$ ]] || die "NODES=$NODES: expected 1 to 9"

# The node answering HTTP on port $1: its id, home (hard-linked distribution + config/data/logs,
# one per engine+port) and port. Every node function below works on the current node.
use_node() {
  NODE_PORT=$1
  OS_ID=$ENGINE-$NODE_PORT
  OS_HOME=$RUN_DIR/$OS_ID
}
use_node "$OPENSEARCH_PORT"
node_ports() { seq "$OPENSEARCH_PORT" $((OPENSEARCH_PORT + $1 - 1)); }

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
    *) echo "$RUN_DIR/$1/" ;;   # bin/<engine>, then java (-cp <home>/lib/*) of that home
  esac
}

# Print the pid recorded for service id $1 if it is alive and really ours.
live_pid() {
  local pid
  pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$(marker "$1")" && echo "$pid"
}

stop_id() {
  local pid i kids
  if pid=$(live_pid "$1"); then
    # Elasticsearch 8.x+: the pid is a launcher whose child is the server; it stops the child
    kids=$(pgrep -P "$pid" | tr '\n' ' ' || true)
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do alive "$pid" || break; sleep 0.5; done
    if alive "$pid"; then
      log "$1 did not stop in 30 s, killing"
      # shellcheck disable=SC2086
      kill -9 "$pid" $kids 2>/dev/null || true
    fi
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

# How to reach the engine of service id $1: sets CLIENT_URL and CLIENT_OPTS (curl options: the CA
# and the credentials when that home was started with ES_SECURITY=true or OS_SECURITY=true; see
# prepare_home: the password in `secure`, the user and the CA beside it).
client() {
  local home=$RUN_DIR/$1
  CLIENT_URL=http://127.0.0.1:${1##*-} CLIENT_OPTS=()
  if [[ -s $home/secure ]]; then
    CLIENT_URL=https://127.0.0.1:${1##*-}
    CLIENT_OPTS=(--cacert "$(client_ca "$home")" -u "$(client_user "$home"):$(cat "$home/secure")")
  fi
}
client_user() { cat "$1/secure.user" 2>/dev/null || echo elastic; }
client_ca() { cat "$1/secure.ca" 2>/dev/null || echo "$1/config/certs/ca/ca.crt"; }
os_up() {
  client "$OS_ID"
  curl -sf -m 10 "${CLIENT_OPTS[@]}" \
    "$CLIENT_URL/_cluster/health?wait_for_status=yellow&wait_for_nodes=%3E%3D$NODES&timeout=5s" >/dev/null
}
# Version of whatever answers on the node's port (plain, or TLS as elastic). Not from "/": the
# Elasticsearch 8.x+ integ-test-zip has no rest-root module, so "GET /" answers 405 there.
os_version() {
  local path='_nodes/_local?filter_path=nodes.*.version'
  { curl -s -m 5 "http://127.0.0.1:$NODE_PORT/$path" ||
    curl -sfk -m 5 -u "elastic:$ES_PASSWORD" "https://127.0.0.1:$NODE_PORT/$path" ||
    curl -sk -m 5 -u "admin:$OS_ADMIN_PASSWORD" "https://127.0.0.1:$NODE_PORT/$path" || true; } |
    sed -n 's/.*"version" *: *"\([^"]*\)".*/\1/p'
}
http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" || true; }
moto_up() { [[ $(http_code "http://127.0.0.1:$MOTO_PORT/moto-api/") != 000 ]]; }

# --- search engine (OpenSearch or Elasticsearch) -----------------------------------------------

# Download (once) Maven artifact $1 (group:artifact:version:zip) as the file $2.
fetch_artifact() {
  local artifact=$1 zip=$2 tmp
  [[ -s $zip ]] && return
  mkdir -p "$CACHE_DIR/downloads"
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
}

# Download (once) and unpack (once) the distribution into CACHE_DIR; print its directory.
fetch_dist() {
  local dist=$CACHE_DIR/$ENGINE zip=$CACHE_DIR/downloads/$ENGINE.zip artifact tmp
  if [[ -x $dist/bin/$ENGINE_NAME ]]; then echo "$dist"; return; fi
  case $ENGINE_NAME in
    opensearch) artifact=org.opensearch.distribution.integ-test-zip:opensearch:$ENGINE_VERSION:zip ;;
    elasticsearch) artifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ENGINE_VERSION:zip ;;
  esac
  fetch_artifact "$artifact" "$zip"
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
    opensearch-[3-9].* | elasticsearch-9.* | elasticsearch-[1-9][0-9].*) echo "$JAVA21_HOME" ;;
    *) dirname "$(dirname "$(readlink -f "$(command -v java)")")" ;;
  esac
}

# The user the engine runs as (it refuses to run as root) and the command prefix to become it.
as_user=()
setup_user() {
  ((EUID == 0)) || return 0
  id -u "$SERVICE_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVICE_USER"
  as_user=(setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups --)
}

# Environment of the engine's own scripts and tools (bin/opensearch*, bin/elasticsearch*):
# OpenSearch reads OPENSEARCH_*, Elasticsearch ES_* (but ES 6.8 to 7.11 only JAVA_HOME, and 8.x+
# warns that it ignores JAVA_HOME).
engine_env=()
set_engine_env() {
  local jh=$1 p=OPENSEARCH
  [[ $ENGINE_NAME == elasticsearch ]] && p=ES
  engine_env=(-u JAVA_HOME "${p}_JAVA_HOME=$jh" "${p}_PATH_CONF=$OS_HOME/config"
    "${p}_TMPDIR=$OS_HOME/tmp" "${p}_JAVA_OPTS=-Xms$OPENSEARCH_HEAP -Xmx$OPENSEARCH_HEAP")
  [[ $ENGINE == elasticsearch-[89].* || $ENGINE == elasticsearch-[1-9][0-9].* ]] ||
    engine_env+=(JAVA_HOME="$jh")
}

# Run tool bin/$1 of the home as the service user.
engine_tool() {
  "${as_user[@]}" env "${engine_env[@]}" "$OS_HOME/bin/$1" "${@:2}" >>"$RUN_DIR/$OS_ID.tools.log" 2>&1 || {
    tail -n 20 "$RUN_DIR/$OS_ID.tools.log" >&2
    die "bin/$1 $2 failed (log: $RUN_DIR/$OS_ID.tools.log)"
  }
}

# Append to the config the Elasticsearch settings that depend on the version and on the modules
# that the distribution has (an unknown setting is fatal at start-up); with ES_SECURITY=true
# also those of TLS and basic auth, with a CA and certificate made once per home.
es_config() {
  local conf=$OS_HOME/config/elasticsearch.yml certs=$OS_HOME/config/certs
  rm -f "$RUN_DIR/$OS_ID.tools.log"
  [[ -d $OS_HOME/modules/x-pack-core ]] && echo "xpack.ml.enabled: false" >>"$conf"   # no ML module though
  [[ -d $OS_HOME/modules/ingest-geoip ]] && ((ENGINE_MAJOR >= 8)) &&
    echo "ingest.geoip.downloader.enabled: false" >>"$conf"
  rm -f "$OS_HOME/secure"
  if [[ ! -d $OS_HOME/modules/x-pack-security ]]; then
    [[ $ES_SECURITY != true ]] || die "ENGINE=$ENGINE has no security module: ES_SECURITY=true is not possible"
    return 0
  fi
  if [[ $ES_SECURITY != true ]]; then
    echo "xpack.security.enabled: false" >>"$conf"   # on by default in 8.x
    return 0
  fi
  ((${#ES_PASSWORD} >= 6)) || die "ES_PASSWORD must have at least 6 characters"
  if [[ ! -s $certs/node/node.crt ]]; then   # once per home: clients keep trusting the same CA
    log "generating a self-signed CA and a certificate for 127.0.0.1/localhost in $certs"
    rm -rf "$certs" && mkdir -p "$certs/ca" "$certs/node"
    ((EUID != 0)) || chown -R "$SERVICE_USER:" "$certs"
    if [[ -d $OS_HOME/lib/tools/security-cli ]]; then   # 8.x+; 7.17's integ-test-zip lacks it
      engine_tool elasticsearch-certutil ca --silent --pem --days 3650 --out "$certs/ca.zip"
      unzip -qo "$certs/ca.zip" -d "$certs"
      engine_tool elasticsearch-certutil cert --silent --pem --days 3650 --name node \
        --ca-cert "$certs/ca/ca.crt" --ca-key "$certs/ca/ca.key" --ip 127.0.0.1 --dns localhost \
        --out "$certs/node.zip"
      unzip -qo "$certs/node.zip" -d "$certs"
    else
      command -v openssl >/dev/null || die "openssl not found (needed for ES_SECURITY=true with $ENGINE)"
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ctes $OS_ID test CA" \
        -keyout "$certs/ca/ca.key" -out "$certs/ca/ca.crt" 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$certs/node/node.key" -out "$certs/node/node.csr" 2>/dev/null
      printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
        "extendedKeyUsage=serverAuth,clientAuth" >"$certs/node/node.ext"
      openssl x509 -req -days 3650 -in "$certs/node/node.csr" -CA "$certs/ca/ca.crt" \
        -CAkey "$certs/ca/ca.key" -CAcreateserial -extfile "$certs/node/node.ext" \
        -out "$certs/node/node.crt" 2>/dev/null
    fi
  fi
  cat >>"$conf" <<EOF
xpack.security.enabled: true
xpack.security.http.ssl.enabled: true
xpack.security.http.ssl.key: certs/node/node.key
xpack.security.http.ssl.certificate: certs/node/node.crt
xpack.security.http.ssl.certificate_authorities: [certs/ca/ca.crt]
xpack.security.transport.ssl.enabled: true
xpack.security.transport.ssl.verification_mode: certificate
xpack.security.transport.ssl.key: certs/node/node.key
xpack.security.transport.ssl.certificate: certs/node/node.crt
xpack.security.transport.ssl.certificate_authorities: [certs/ca/ca.crt]
EOF
  (umask 077 && printf '%s' "$ES_PASSWORD" >"$OS_HOME/secure")   # for this script's curl only
}

# OS_SECURITY=true: the opensearch-security plugin (installed once per home) and its demo
# configuration (TLS certificates, admin user, REST API for all_access), appended to the config
# written on this start. false: a plugin left in the home by an earlier start is removed.
os_security_config() {
  local plugin=$OS_HOME/plugins/opensearch-security version=$ENGINE_VERSION.0 zip
  rm -f "$OS_HOME/secure" "$OS_HOME/secure.user" "$OS_HOME/secure.ca"
  if [[ $OS_SECURITY != true ]]; then
    [[ ! -d $plugin ]] || { log "$OS_ID: removing the security plugin (OS_SECURITY=false)"; rm -rf "$plugin"; }
    return 0
  fi
  [[ $ENGINE == opensearch-[2-9].* ]] || die "OS_SECURITY=true needs OpenSearch 2.x or later, not $ENGINE"
  zip=$CACHE_DIR/downloads/opensearch-security-$version.zip
  fetch_artifact "org.opensearch.plugin:opensearch-security:$version:zip" "$zip"
  rm -f "$RUN_DIR/$OS_ID.tools.log"
  if [[ ! -d $plugin ]]; then
    log "$OS_ID: installing opensearch-security $version"
    env "${engine_env[@]}" "$OS_HOME/bin/opensearch-plugin" install --batch "file://$zip" \
      >>"$RUN_DIR/$OS_ID.tools.log" 2>&1 || {
      tail -n 20 "$RUN_DIR/$OS_ID.tools.log" >&2
      rm -rf "$plugin"
      die "cannot install $zip (log: $RUN_DIR/$OS_ID.tools.log)"
    }
    chmod -R a+rX "$plugin" "$OS_HOME/config"
  fi
  # -y: no questions, -i: initialise the security index from the demo files, -s: nothing done
  # when opensearch.yml already has the demo configuration (it does not: written on each start)
  env "${engine_env[@]}" OPENSEARCH_INITIAL_ADMIN_PASSWORD="$OS_ADMIN_PASSWORD" \
    bash "$plugin/tools/install_demo_configuration.sh" -y -i -s >>"$RUN_DIR/$OS_ID.tools.log" 2>&1 || {
    tail -n 20 "$RUN_DIR/$OS_ID.tools.log" >&2
    die "the security plugin's demo configuration failed (log: $RUN_DIR/$OS_ID.tools.log)"
  }
  grep -q '^plugins.security.ssl.http.enabled: *true' "$OS_HOME/config/opensearch.yml" ||
    die "the demo configuration did not enable HTTPS (see $OS_HOME/config/opensearch.yml)"
  (umask 077 && printf '%s' "$OS_ADMIN_PASSWORD" >"$OS_HOME/secure")   # for this script's curl only
  echo admin >"$OS_HOME/secure.user"
  echo "$OS_HOME/config/root-ca.pem" >"$OS_HOME/secure.ca"
}

# The password of `elastic`: bootstrap.password in the keystore, set on every start (and used as
# long as nobody changes that password through the API). Run after the config is the user's.
es_keystore() {
  [[ -s $OS_HOME/secure ]] || return 0
  [[ -f $OS_HOME/config/elasticsearch.keystore ]] || engine_tool elasticsearch-keystore create
  printf '%s\n' "$ES_PASSWORD" | engine_tool elasticsearch-keystore add -x -f bootstrap.password
}

# Per engine+port home: a hard-linked copy of the cached distribution (so that the service user
# needs no access to CACHE_DIR, which is often under root's private home), with its own config,
# data, logs and tmp dirs owned by the service user.
prepare_home() {
  local dist=$1 tmp transport=transport.port
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
  [[ $ENGINE == elasticsearch-[0-6].* ]] && transport=transport.tcp.port
  layout_data
  cat >"$OS_HOME/config/$ENGINE_NAME.yml" <<EOF
# written by scripts/services.sh on each start
cluster.name: $(cluster_name)
node.name: $OS_ID
network.host: 127.0.0.1
http.port: $NODE_PORT
$transport: $((NODE_PORT + 100))
path.data: $OS_HOME/data
path.logs: $OS_HOME/logs
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  discovery_config >>"$OS_HOME/config/$ENGINE_NAME.yml"
  [[ $ENGINE_NAME != elasticsearch ]] || es_config
  [[ $ENGINE_NAME != opensearch ]] || os_security_config
  if ((EUID == 0)); then
    chown -R "$SERVICE_USER:" "$OS_HOME/config" "$OS_HOME/data" "$OS_HOME/logs" "$OS_HOME/tmp"
    "${as_user[@]}" test -x "$OS_HOME/bin/$ENGINE_NAME" ||
      die "user $SERVICE_USER cannot reach $OS_HOME; set RUN_DIR to a directory outside a private home"
  fi
  [[ $ENGINE_NAME != elasticsearch ]] || es_keystore
}

cluster_name() {
  if ((NODES == 1)); then echo "ctes-$OS_ID"; else echo "ctes-$ENGINE-$OPENSEARCH_PORT-x$NODES"; fi
}

# How the node finds the others: alone, or by the transport ports of all NODES.
discovery_config() {
  local port seeds=() names=() bootstrap=cluster.initial_master_nodes
  if ((NODES == 1)); then echo "discovery.type: single-node"; return; fi
  for port in $(node_ports "$NODES"); do
    seeds+=("\"127.0.0.1:$((port + 100))\"") names+=("\"$ENGINE-$port\"")
  done
  [[ $ENGINE == opensearch-1.* || $ENGINE_NAME == elasticsearch ]] ||
    bootstrap=cluster.initial_cluster_manager_nodes
  local IFS=,
  echo "discovery.seed_hosts: [${seeds[*]}]"
  echo "$bootstrap: [${names[*]}]"
}

# Data written by another layout (a single node, another cluster) cannot join this one: the
# home's data is emptied when its recorded layout differs (no record: a single node's).
layout_data() {
  local record=$OS_HOME/layout wanted was
  wanted=$(cluster_name)
  was=$(cat "$record" 2>/dev/null || echo "ctes-$OS_ID")
  if [[ $was != "$wanted" ]] && [[ -n $(ls -A "$OS_HOME/data") ]]; then
    log "$OS_ID: its data belongs to cluster $was, not $wanted: emptying $OS_HOME/data"
    rm -rf "${OS_HOME:?}/data" && mkdir -p "$OS_HOME/data"
  fi
  echo "$wanted" >"$record"
}

start_opensearch() {
  local pid version dist jh
  case $ENGINE in
    opensearch-[1-9].* | elasticsearch-[6-9].* | elasticsearch-[1-9][0-9].*) ;;
    *) die "ENGINE=$ENGINE: expected opensearch-<version> (1.3.x or later) or" \
      "elasticsearch-<version> (6.8.x or later), e.g. opensearch-2.19.6, elasticsearch-8.17.0" ;;
  esac
  if ((NODES > 1)); then
    [[ $ENGINE != elasticsearch-6.* ]] || die "NODES=$NODES: $ENGINE has no discovery.seed_hosts; use one node"
    [[ $ES_SECURITY != true ]] || die "NODES=$NODES with ES_SECURITY=true is not supported (one CA per node)"
    [[ $OS_SECURITY != true ]] || die "NODES=$NODES with OS_SECURITY=true is not supported (demo certificates of one node)"
  fi
  if pid=$(live_pid "$OS_ID"); then log "$OS_ID already running (pid $pid)"; echo "$pid"; return; fi
  version=$(os_version)
  if [[ -n $version ]]; then
    [[ $version == "$ENGINE_VERSION" ]] ||
      die "port $NODE_PORT already answers with version $version, not $ENGINE; stop it first"
    log "$ENGINE already answers on port $NODE_PORT (not started by this script)"
    return
  fi
  jh=$(java_home)
  [[ -x $jh/bin/java ]] || die "no java in $jh (set SERVICE_JAVA_HOME)"
  dist=$(fetch_dist)
  setup_user
  set_engine_env "$jh"
  prepare_home "$dist"
  log "starting $OS_ID (java: $jh, heap: $OPENSEARCH_HEAP)"
  nohup "${as_user[@]}" env "${engine_env[@]}" \
    "$OS_HOME/bin/$ENGINE_NAME" </dev/null >"$RUN_DIR/$OS_ID.log" 2>&1 9>&- &
  echo $! >"$RUN_DIR/$OS_ID.pid"   # the scripts exec, so this becomes the (first) java pid
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
  local os_pids=() moto_pid port n=0 where=""
  lock
  if [[ $WHICH != moto ]]; then
    ((NODES == 1)) || echo "$NODES" >"$RUN_DIR/nodes-$OPENSEARCH_PORT"   # for `stop`
    for port in $(node_ports "$NODES"); do
      use_node "$port"
      os_pids+=("$(start_opensearch)")
    done
  fi
  [[ $WHICH == opensearch ]] || moto_pid=$(start_moto)
  [[ $WHICH == opensearch ]] || wait_up "$MOTO_ID" moto_up "$moto_pid"
  if [[ $WHICH != moto ]]; then
    for port in $(node_ports "$NODES"); do
      use_node "$port"
      wait_up "$OS_ID" os_up "${os_pids[n++]}"
    done
    use_node "$OPENSEARCH_PORT"
  fi
  ((NODES == 1)) || where=" (and the next $((NODES - 1)) ports: $NODES nodes)"
  client "$OS_ID"
  log "up: $WHICH (search engine: $ENGINE on $CLIENT_URL$where, moto: http://127.0.0.1:$MOTO_PORT)"
  [[ $WHICH == moto || ! -s $RUN_DIR/$OS_ID/secure ]] ||
    log "TLS and basic auth: user $(client_user "$RUN_DIR/$OS_ID"), CA $(client_ca "$RUN_DIR/$OS_ID")"
}

cmd_stop() {
  local f port nodes=$NODES started
  lock
  if [[ $WHICH != moto ]]; then
    started=$(cat "$RUN_DIR/nodes-$OPENSEARCH_PORT" 2>/dev/null || echo 1)
    ((started > nodes)) && nodes=$started
    for port in $(node_ports "$nodes"); do
      for f in "$RUN_DIR"/*-"$port".pid; do   # whatever engine runs on that port
        [[ -e $f && $f != */moto-* ]] && stop_id "$(basename "$f" .pid)"
      done
    done
    rm -f "$RUN_DIR/nodes-$OPENSEARCH_PORT"
  fi
  [[ $WHICH == opensearch ]] || stop_id "$MOTO_ID"
}

cmd_status() {
  local f id pid port state health
  for f in "$RUN_DIR"/*.pid; do
    [[ -e $f ]] || { echo "nothing started by services.sh in $RUN_DIR"; return; }
    id=$(basename "$f" .pid) port=${id##*-}
    if pid=$(live_pid "$id"); then state="running (pid $pid)"; else state="not running (stale pid file)"; fi
    case $id in
      moto-*) state+=", http $(http_code "http://127.0.0.1:$port/moto-api/")" ;;
      *)
        client "$id"
        health=$(curl -s -m 5 "${CLIENT_OPTS[@]}" "$CLIENT_URL/_cluster/health" || true)
        health=$(grep -o '"status":"[a-z]*"\|"number_of_nodes":[0-9]*' <<<"$health" | paste -sd, -) || true
        state+=", $CLIENT_URL, ${health:-not answering}"
        [[ ! -s $RUN_DIR/$id/secure ]] || state+=", user $(client_user "$RUN_DIR/$id"), CA $(client_ca "$RUN_DIR/$id")"
        ;;
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
