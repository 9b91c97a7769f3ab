# Shared by the bench scripts: stopping processes by PID, asking the OS for
# free ports, waiting for a process's "listening" line. Sourced, not run.

stop_pid() { # pid [grace seconds]: TERM, wait, then KILL
	local pid=$1 grace=${2:-5} i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# Ask the OS: bind port 0, read it back. free_port: free for UDP and TCP;
# free_media_port: p and p+2 free for UDP (SIPp binds -mp and -mp + 2).
free_port() {
	python3 - <<'EOF'
import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        t.close(); u.close()
EOF
}
free_media_port() {
	python3 - <<'EOF'
import socket
while True:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0))
    p = a.getsockname()[1]
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if p < 65533:
            b.bind(("127.0.0.1", p + 2)); print(p); break
    except OSError:
        pass
    finally:
        b.close(); a.close()
EOF
}
sipp_ports() { # the local, control and media ports every SIPp instance needs
	echo "-p $(free_port) -cp $(free_port) -mp $(free_media_port)"
}

# file prefix pid [stderr file] -> the rest of the first line of `file` that
# starts with `prefix` (handoff's "listening udp ", "listening http "). Waits up
# to 15 s while `pid` lives; without the line, says so with the process's
# stderr tail and fails (in `X=$(wait_line ...)` under set -e the script stops).
wait_line() {
	local i line=""
	for ((i = 0; i < 150; i++)); do
		line=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
		[[ -n $line ]] && break
		kill -0 "$3" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z $line ]]; then
		echo "no '$2' line from pid $3${4:+; its stderr:}" >&2
		[[ -n ${4:-} ]] && tail -20 "$4" >&2
		return 1
	fi
	echo "${line#"$2"}"
}
