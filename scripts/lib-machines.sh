# shellcheck shell=bash
# Part of scripts/machines.sh (sourced by it, not run): finding and ending a
# run's processes, its cgroups, and `down`. Uses machines.sh's die, log,
# read_state, the state S and CG_PARENT.

# ---------------------------------------------------------------- processes

alive() { [ -d "/proc/$1" ] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }

# Is PID the init (PID 1 of its own PID namespace) of a container?
is_container_init() {
  local nspid
  nspid=$(sed -n 's/^NSpid:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null) || return 1
  [[ $nspid =~ [[:space:]]1$ ]]
}

# Is PID the nspawn of machine MACHINE (and not a recycled PID)?
is_nspawn_of() {
  tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q -- "systemd-nspawn .*--machine=$2 "
}

# init_of NSPAWN_PID: the container's systemd, a descendant of nspawn.
init_of() {
  local pid=$1 child queue=("$1")
  while [ ${#queue[@]} -gt 0 ]; do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    # shellcheck disable=SC2013 # PIDs separated by spaces
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
      if is_container_init "$child"; then
        echo "$child"
        return 0
      fi
      queue+=("$child")
    done
  done
  return 1
}

is_watcher_pid() {
  tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q -- " _watch .* $2 "
}

# The cgroup hierarchies a process must be moved in for nspawn: the named
# systemd one and the unified one (hybrid), or the single cgroup2 tree.
cgroup_roots() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    echo /sys/fs/cgroup
  else
    local h
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
      [ ! -d "$h" ] || echo "$h"
    done
  fi
}

# Remove a cgroup subtree we created (deepest first; only empty ones go).
remove_cgroup() {
  local rel=$1 root
  [[ $rel == "$CG_PARENT/"* ]] || return 0
  for root in $(cgroup_roots); do
    [ -d "$root/$rel" ] || continue
    find "$root/$rel" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    rmdir "$root/$CG_PARENT" 2>/dev/null || true
  done
}

# ---------------------------------------------------------------- teardown

teardown() {
  local file=$1 prefix i pid init machine ns left
  read_state "$file"
  prefix=${S[PREFIX]:-}
  if [ -z "$prefix" ]; then
    log "down: $file names no run: nothing to do"
    return 0
  fi
  [[ $prefix =~ ^[a-z][a-z0-9]{1,7}$ ]] || die "bad PREFIX in $file: $prefix"

  pid=${S[WATCHER_PID]:-}
  if [ -n "$pid" ] && [ "$pid" != $$ ] && is_watcher_pid "$pid" "$file"; then
    kill -TERM "$pid" 2>/dev/null || true
  fi

  # SIGTERM to each nspawn: it asks the container's systemd to power off.
  local -a nspawns=() inits=()
  for ((i = 1; i <= ${S[COUNT]:-0}; i++)); do
    pid=${S[NSPAWN_PID_$i]:-} machine=${S[MACHINE_$i]:-}
    init=${S[INIT_PID_$i]:-}
    if [ -n "$pid" ] && [ -n "$machine" ] && is_nspawn_of "$pid" "$machine"; then
      nspawns+=("$pid")
      [ -n "$init" ] || init=$(init_of "$pid") || true
    fi
    if [ -n "$init" ] && is_container_init "$init"; then inits+=("$init"); fi
  done
  if [ ${#nspawns[@]} -gt 0 ]; then
    kill -TERM "${nspawns[@]}" 2>/dev/null || true
    for _ in $(seq 1 200); do
      left=
      for pid in "${nspawns[@]}"; do alive "$pid" && left=1; done
      [ -n "$left" ] || break
      sleep 0.1
    done
  fi
  # A container that did not power off in 20 s: SIGKILL its init (the whole
  # PID namespace goes with it), then its nspawn.
  for pid in ${inits[@]+"${inits[@]}"}; do
    if alive "$pid" && is_container_init "$pid"; then
      log "down: container init $pid did not stop: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in ${nspawns[@]+"${nspawns[@]}"}; do
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 50); do
    left=
    for pid in ${nspawns[@]+"${nspawns[@]}"} ${inits[@]+"${inits[@]}"}; do
      alive "$pid" && left=1
    done
    [ -n "$left" ] || break
    sleep 0.1
  done

  # Anything still in the run's namespaces (a daemon a test started on the
  # hub side): by PID.
  local -a namespaces=() pids=()
  mapfile -t namespaces < <(
    {
      [ -z "${S[HUB_NS]:-}" ] || echo "${S[HUB_NS]}"
      for ((i = 1; i <= ${S[COUNT]:-0}; i++)); do
        [ -z "${S[NS_$i]:-}" ] || echo "${S[NS_$i]}"
      done
      ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}(hub|n[0-9]+)\$" || true
    } | sort -u
  )
  for ns in "${namespaces[@]}"; do
    while read -r pid; do
      [ -z "$pid" ] || [ "$pid" = $$ ] || pids+=("$pid")
    done < <(ip netns pids "$ns" 2>/dev/null || true)
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    sleep 1
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  for ns in "${namespaces[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  for ((i = 1; i <= ${S[COUNT]:-0}; i++)); do
    [ -z "${S[CGROUP_$i]:-}" ] || remove_cgroup "${S[CGROUP_$i]}"
  done
  local run=${S[RUN_DIR]:-}
  if [ -n "$run" ] && [[ $run == */machines-"$prefix".* ]] && [ -d "$run" ]; then
    rm -rf "$run"
  fi
  left=()
  for ns in "${namespaces[@]}"; do
    [ ! -e "/run/netns/$ns" ] || left+=("$ns")
  done
  [ ${#left[@]} -eq 0 ] || die "down: namespaces still there: ${left[*]}"
  log "down: $prefix torn down"
}
