#!/usr/bin/env bash
# A one-node SLURM cluster (two fake GPUs, accounting in MariaDB) on a fresh Debian 12 machine,
# as root, for CI: `up` installs and starts it, `down` stops every daemon it started by PID.
#
#   sudo .ci/slurm-cluster.sh up     # sbatch, sacct, ... then work as on any cluster
#   sudo .ci/slurm-cluster.sh down
#
# Everything lives under $SLURM_CI_DIR (default /tmp/gradcamo-slurm): configs, state, logs,
# PID files and the MariaDB data folder. /etc/slurm only gets symlinks to our three configs
# (a batch job's srun reads the default path, whatever SLURM_CONF the submitter had); `up`
# refuses to replace a config that is not ours, `down` removes the links.
# Facts this rests on (Debian 12, Slurm 22.05.8):
# - no systemd here: munged runs as user munge, then slurmdbd, slurmctld and slurmd as root;
# - 22.05 has no auth/slurm: auth/munge; proctrack/linuxproc and task/none need no cgroups;
# - the executor plugin asks sacct for job states whenever sacct exists, so accounting must
#   answer: slurmdbd on MariaDB (a socket-only server in our folder);
# - two fake GPUs: GresTypes=gpu, Gres=gpu:2 on the node, gres.conf File=/dev/null and
#   /dev/zero, so a rule's `gpu: 1` becomes `--gpus=1` and SLURM allocates it (CUDA is not
#   involved); two, so that two group jobs of per-well GPU jobs, one GPU each, run side by
#   side (.ci/slurm-overlay.yaml);
# - partitions `cpu` (default) and `gpu` on the same node, as a cluster would have them.
set -euo pipefail

DIR=${SLURM_CI_DIR:-/tmp/gradcamo-slurm}
HOST=$(hostname -s)
CLUSTER=gradcamo-ci

log() { echo "[slurm-cluster] $*" >&2; }

install_packages() {
    local missing=()
    for bin in slurmctld slurmd slurmdbd sbatch munged mariadbd; do
        command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing SLURM, munge and MariaDB (missing: ${missing[*]})"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq slurmctld slurmd slurmdbd slurm-client munge mariadb-server >/dev/null
    fi
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    log "timed out after ${seconds}s waiting for $what"
    for f in "$DIR"/log/*.log; do log "--- $f"; tail -20 "$f" >&2 || true; done
    return 1
}

write_configs() {
    local cpus mem
    cpus=$(nproc)
    # Leave 2 GB to the system; DefMemPerCPU so a job without --mem does not take the node.
    mem=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 2000))
    mkdir -p "$DIR"/{etc,state,spool,log,run,mysql}
    cat >"$DIR/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
DefMemPerCPU=1000
ReturnToService=2
# The node advertises twice its cores (config_overrides lets slurmd believe the config), so
# that one-thread jobs overlap with a two-thread one as they do in a local run on 2 cores:
# without it, a 2-CPU group job of QC held back Cellpose training, and the CI run took
# minutes longer than the local one.
SlurmdParameters=config_overrides
MinJobAge=300
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
# The executor plugin puts the rule in the job comment: keep it for sacct -o Comment.
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
NodeName=$HOST CPUs=$((2 * cpus)) RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/etc/gres.conf" <<EOF
NodeName=$HOST Name=gpu File=/dev/null
NodeName=$HOST Name=gpu File=/dev/zero
EOF
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
    cat >"$DIR/etc/my.cnf" <<EOF
[mysqld]
datadir=$DIR/mysql
socket=$DIR/run/mysqld.sock
pid-file=$DIR/run/mysqld.pid
log-error=$DIR/log/mariadb.log
bind-address=127.0.0.1
port=3306
innodb_buffer_pool_size=64M
innodb_lock_wait_timeout=900
[client]
socket=$DIR/run/mysqld.sock
EOF
}

start_munge() {
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    if sh -c 'munge -n | unmunge' >/dev/null 2>&1; then
        log "munged already runs: using it (and leaving it running at down)"
        return 0
    fi
    runuser -u munge -- /usr/sbin/munged 2>>"$DIR/log/munge.log"
    wait_for 10 munge sh -c 'munge -n | unmunge'
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
}

start_mariadb() {
    chown -R mysql:mysql "$DIR/mysql" "$DIR/run" "$DIR/log"
    if [ ! -d "$DIR/mysql/mysql" ]; then
        mariadb-install-db --defaults-file="$DIR/etc/my.cnf" --user=mysql \
            --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1
    fi
    runuser -u mysql -- /usr/sbin/mariadbd --defaults-file="$DIR/etc/my.cnf" </dev/null >>"$DIR/log/mariadb.out" 2>&1 &
    wait_for 60 MariaDB mariadb --defaults-file="$DIR/etc/my.cnf" -e "SELECT 1"
    mariadb --defaults-file="$DIR/etc/my.cnf" <<'EOF'
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
    # Root-owned files the slurm daemons write share these folders.
    chown root:root "$DIR/log" "$DIR/run"
    chmod 777 "$DIR/log" "$DIR/run"
}

link_configs() {
    mkdir -p /etc/slurm
    for name in slurm.conf gres.conf slurmdbd.conf; do
        if [ -e "/etc/slurm/$name" ] && [ "$(readlink "/etc/slurm/$name")" != "$DIR/etc/$name" ]; then
            log "/etc/slurm/$name exists and is not ours: this machine has a SLURM of its own"
            exit 1
        fi
        ln -sfn "$DIR/etc/$name" "/etc/slurm/$name"
    done
}

unlink_configs() {
    for name in slurm.conf gres.conf slurmdbd.conf; do
        if [ "$(readlink "/etc/slurm/$name" 2>/dev/null)" = "$DIR/etc/$name" ]; then rm -f "/etc/slurm/$name"; fi
    done
}

start_slurm() {
    export SLURM_CONF=/etc/slurm/slurm.conf
    /usr/sbin/slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    /usr/sbin/slurmctld -f "$SLURM_CONF"
    /usr/sbin/slurmd -f "$SLURM_CONF"
    wait_for 60 "node $HOST idle" sh -c "sinfo -h -n $HOST -o %t | grep -qx idle"
    # A job round trip through accounting: what the executor plugin's status checks rely on.
    local job
    job=$(sbatch --parsable -p gpu --gpus=1 -t 1 --mem=100 -o /dev/null --wrap true)
    wait_for 60 "job $job in sacct as COMPLETED" sh -c \
        "sacct -X -n -P -j $job -o State | grep -qx COMPLETED"
    log "up: cluster $CLUSTER, node $HOST ($((2 * $(nproc))) CPUs on $(nproc) cores, 2 fake GPUs), partitions cpu and gpu"
}

stop_pid() {  # stop_pid NAME PIDFILE
    local name=$1 file=$2 pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped $name ($pid)"
    fi
    rm -f "$file"
}

down() {
    if [ -f "$DIR/etc/slurm.conf" ]; then SLURM_CONF="$DIR/etc/slurm.conf" scancel --user=root >/dev/null 2>&1 || true; fi
    stop_pid slurmd "$DIR/run/slurmd.pid"
    stop_pid slurmctld "$DIR/run/slurmctld.pid"
    stop_pid slurmdbd "$DIR/run/slurmdbd.pid"
    stop_pid mariadbd "$DIR/run/mysqld.pid"
    stop_pid munged "$DIR/run/munged.pid"
    unlink_configs
}

case "${1:-}" in
up)
    [ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }
    down
    rm -rf "$DIR"
    install_packages
    write_configs
    link_configs
    start_munge
    start_mariadb
    start_slurm
    ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
