#!/usr/bin/env bash
# A real SLURM cluster on one machine, for development and tests:
# munge, MariaDB + slurmdbd (accounting), slurmctld and two slurmd as nodes n1 and n2.
#
#   orchestration/dev_cluster.sh up      # install missing Debian packages (root), start, wait for idle nodes
#   orchestration/dev_cluster.sh status  # which of its daemons run; sinfo
#   orchestration/dev_cluster.sh down    # stop exactly the daemons this script started, undo its /etc/hosts lines
#   orchestration/dev_cluster.sh env     # the line to eval: export SLURM_CONF=...
#
# Everything (configs, state, logs, sockets, the database) lives under RMAT_SLURM_DIR
# (default /tmp/rmat-slurm). Outside it, `up` changes the machine in two ways, and says so:
# it installs missing Debian packages, and it adds "127.0.0.1 n1" (and n2) to /etc/hosts
# where those names do not resolve (torch's MASTER_ADDR is the first node's name); `down`
# removes exactly the lines `up` added. Every daemon runs in its own session (setsid), so
# a signal to the caller's process group (a test harness stopping its children) never
# reaches one of them. Idempotent: `up` on a running cluster changes nothing.
set -euo pipefail

ROOT=${RMAT_SLURM_DIR:-/tmp/rmat-slurm}
CLUSTER=rmat
NODES=(n1 n2)
CPUS_PER_NODE=${RMAT_SLURM_CPUS:-2}
DB_PORT=${RMAT_SLURM_DB_PORT:-13306}
DBD_PORT=${RMAT_SLURM_DBD_PORT:-16819}
CTLD_PORT=${RMAT_SLURM_CTLD_PORT:-16817}
SLURMD_BASE_PORT=${RMAT_SLURM_SLURMD_PORT:-17001}
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
DB_PASS=rmat-dev-only

conf=$ROOT/etc/slurm.conf
munge_socket=$ROOT/munge/munge.socket
hosts_added=$ROOT/hosts-added  # the /etc/hosts lines `up` added, for `down` to remove

log() { echo "dev_cluster: $*" >&2; }
die() { log "$*"; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
  log "installing ${missing[*]}"
  # apt and debconf chatter on stderr ("delaying package configuration, since apt-utils is not
  # installed") even when all goes well: it is shown only when the install fails.
  local out
  if ! out=$( { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
                DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
                  --no-install-recommends "${missing[@]}"; } 2>&1 >/dev/null ); then
    printf '%s\n' "$out" >&2
    die "installing ${missing[*]} failed (apt-get's messages above)"
  fi
}

ensure_hosts() {
  # torch's MASTER_ADDR is the first node's name: it must resolve.
  for n in "${NODES[@]}"; do
    getent hosts "$n" >/dev/null && continue
    echo "127.0.0.1 $n" >>/etc/hosts
    echo "127.0.0.1 $n" >>"$hosts_added"
    log "added '127.0.0.1 $n' to /etc/hosts (down removes it)"
  done
}

remove_hosts() {
  [ -f "$hosts_added" ] || return 0
  # Rewritten in place, not renamed over: /etc/hosts may be a bind mount (containers).
  local kept; kept=$(grep -vxF -f "$hosts_added" /etc/hosts || true)
  printf '%s\n' "$kept" >/etc/hosts
  log "removed from /etc/hosts: $(paste -sd, "$hosts_added")"
  rm -f "$hosts_added"
}

detached() {
  # Its own session and process group, no terminal, stdin/stdout closed: the caller's signals never reach it.
  setsid -f "$@" </dev/null >/dev/null
}

write_configs() {
  mkdir -p "$ROOT"/{etc,state,log,run,spool,munge,mysql}
  chmod 755 "$ROOT"
  local mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / ${#NODES[@]} / 2 ))
  local host; host=$(hostname)
  {
    echo "ClusterName=$CLUSTER"
    echo "SlurmctldHost=$host(127.0.0.1)"
    echo "SlurmctldPort=$CTLD_PORT"
    echo "SlurmUser=root"
    echo "AuthType=auth/munge"
    echo "AuthInfo=socket=$munge_socket,cred_expire=10"
    echo "CredType=cred/munge"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "MpiDefault=none"
    echo "MailProg=/bin/true"
    echo "ReturnToService=2"
    echo "KillWait=30"  # SIGKILL 30 s after a cancel's SIGTERM (the default): a cancelled training checkpoints first
    echo "SlurmdParameters=config_overrides"
    echo "DependencyParameters=kill_invalid_depend"
    echo "SchedulerParameters=bf_interval=5,sched_interval=5"
    echo "StateSaveLocation=$ROOT/state"
    echo "SlurmdSpoolDir=$ROOT/spool/%n"
    echo "SlurmctldPidFile=$ROOT/run/slurmctld.pid"
    echo "SlurmdPidFile=$ROOT/run/slurmd-%n.pid"
    echo "SlurmctldLogFile=$ROOT/log/slurmctld.log"
    echo "SlurmdLogFile=$ROOT/log/slurmd-%n.log"
    echo "AccountingStorageType=accounting_storage/slurmdbd"
    echo "AccountingStorageHost=localhost"
    echo "AccountingStoragePort=$DBD_PORT"
    echo "AccountingStoragePass=$munge_socket"  # slurmctld ignores AuthInfo's socket for the dbd link
    echo "JobAcctGatherType=jobacct_gather/none"
    local port=$SLURMD_BASE_PORT
    for n in "${NODES[@]}"; do
      echo "NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$port CPUs=$CPUS_PER_NODE RealMemory=$mem_mb State=UNKNOWN"
      port=$((port + 1))
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP"
  } >"$conf.tmp"
  mv "$conf.tmp" "$conf"
  {
    echo "AuthType=auth/munge"
    echo "AuthInfo=socket=$munge_socket"
    echo "DbdHost=localhost"
    echo "DbdPort=$DBD_PORT"
    echo "SlurmUser=root"
    echo "StorageType=accounting_storage/mysql"
    echo "StorageHost=127.0.0.1"
    echo "StoragePort=$DB_PORT"
    echo "StorageUser=slurm"
    echo "StoragePass=$DB_PASS"
    echo "StorageLoc=slurm_acct_db"
    echo "PidFile=$ROOT/run/slurmdbd.pid"
    echo "LogFile=$ROOT/log/slurmdbd.log"
  } >"$ROOT/etc/slurmdbd.conf"
  chmod 600 "$ROOT/etc/slurmdbd.conf"  # slurmdbd refuses a world-readable config
}

start_munge() {
  pid_alive "$ROOT/munge/munged.pid" && return
  [ -f "$ROOT/munge/munge.key" ] || dd if=/dev/urandom of="$ROOT/munge/munge.key" bs=1024 count=1 status=none
  chown -R munge:munge "$ROOT/munge"
  chmod 755 "$ROOT/munge"  # clients need to reach the socket; the key itself stays 0400
  chmod 400 "$ROOT/munge/munge.key"
  runuser -u munge -- test -x "$ROOT/munge" \
    || die "user munge cannot reach $ROOT/munge; choose an RMAT_SLURM_DIR whose parent folders all may enter"
  detached runuser -u munge -- /usr/sbin/munged --socket="$munge_socket" --key-file="$ROOT/munge/munge.key" \
    --pid-file="$ROOT/munge/munged.pid" --log-file="$ROOT/munge/munged.log" --seed-file="$ROOT/munge/munged.seed"
  wait_for "munged" "test -S $munge_socket"
}

start_mariadb() {
  pid_alive "$ROOT/run/mariadb.pid" && return
  if [ ! -d "$ROOT/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$ROOT/mysql" >/dev/null
  fi
  detached mariadbd --no-defaults --user=root --datadir="$ROOT/mysql" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --socket="$ROOT/run/mysql.sock" --pid-file="$ROOT/run/mariadb.pid" --log-error="$ROOT/log/mariadb.log" \
    2>/dev/null
  for _ in $(seq 60); do
    mariadb --socket="$ROOT/run/mysql.sock" -uroot -e "select 1" >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb --socket="$ROOT/run/mysql.sock" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" \
    || die "MariaDB did not come up; see $ROOT/log/mariadb.log"
}

start_slurm() {
  export SLURM_CONF=$conf
  if ! pid_alive "$ROOT/run/slurmdbd.pid"; then
    detached slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for "slurmdbd" "sacctmgr -n list cluster"
  fi
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  pid_alive "$ROOT/run/slurmctld.pid" || detached slurmctld
  wait_for "slurmctld" "scontrol ping"
  for n in "${NODES[@]}"; do
    pid_alive "$ROOT/run/slurmd-$n.pid" || detached slurmd -N "$n"
  done
  wait_for "idle nodes" "test \$(sinfo -h -N -t idle,mix,alloc -o %N | sort -u | wc -l) -eq ${#NODES[@]}"
}

wait_for() {
  local what=$1 check=$2
  for _ in $(seq 120); do
    bash -c "$check" >/dev/null 2>&1 && return
    sleep 0.5
  done
  die "$what not ready after 60 s; logs in $ROOT/log"
}

stop_pidfile() {
  local file=$1
  pid_alive "$file" || return 0
  local pid; pid=$(cat "$file")
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

cmd_up() {
  install_packages
  ensure_hosts
  write_configs
  start_munge
  start_mariadb
  start_slurm
  log "up: export SLURM_CONF=$conf"
}

cmd_down() {
  for n in "${NODES[@]}"; do stop_pidfile "$ROOT/run/slurmd-$n.pid"; done
  stop_pidfile "$ROOT/run/slurmctld.pid"
  stop_pidfile "$ROOT/run/slurmdbd.pid"
  stop_pidfile "$ROOT/run/mariadb.pid"
  stop_pidfile "$ROOT/munge/munged.pid"
  remove_hosts
  log "down"
}

cmd_status() {
  for d in munge/munged run/mariadb run/slurmdbd run/slurmctld run/slurmd-n1 run/slurmd-n2; do
    if pid_alive "$ROOT/$d.pid"; then echo "$(basename "$d"): running ($(cat "$ROOT/$d.pid"))"
    else echo "$(basename "$d"): stopped"; fi
  done
  pid_alive "$ROOT/run/slurmctld.pid" && SLURM_CONF=$conf sinfo -N
  return 0
}

case "${1:-up}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
