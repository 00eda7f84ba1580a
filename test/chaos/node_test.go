//go:build linux

package chaos

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Bounds of the node's operations. They limit how long a broken node can
// stall the suite; a healthy node takes a few seconds to start.
const (
	nodeStartTimeout = 90 * time.Second // until the node has booted
	nodeStopTimeout  = 60 * time.Second // until rabbitmqctl shutdown returns
	nodeExitTimeout  = 30 * time.Second // until the node's processes are gone
	ctlTimeout       = 60 * time.Second // one rabbitmqctl command
	nodeStartTries   = 3                // node starts with fresh ports when the last one exited early
)

// debianScripts is where Debian's rabbitmq-server package installs the real
// scripts. The commands in /usr/sbin are wrappers that switch to the
// rabbitmq user and log to the system broker's files, so the suite calls
// these scripts directly.
const debianScripts = "/usr/lib/rabbitmq/bin"

// rabbitNode is a RabbitMQ node that the suite starts from the installed
// rabbitmq-server. It has a name, ports, data directory, log directory and
// Erlang cookie of its own, so it shares nothing with the system's broker
// except the epmd name server. Its process group is a child of the test
// process.
type rabbitNode struct {
	name     string // Erlang node name, hookbus-chaos-<random>@localhost
	dir      string // HOME, data, logs and configuration of the node
	scripts  string // directory of rabbitmq-server and rabbitmqctl
	amqpPort int
	env      []string

	cmd    *exec.Cmd
	exited chan struct{} // closed when rabbitmq-server has exited
}

// findScripts returns the directory that holds rabbitmq-server and
// rabbitmqctl: HOOKBUS_CHAOS_RABBITMQ_SCRIPTS when set, Debian's script
// directory when it exists, and otherwise the directory of rabbitmq-server
// on PATH. Only a missing rabbitmq-server wraps errEnvironment; a wrong
// HOOKBUS_CHAOS_RABBITMQ_SCRIPTS is a configuration error.
func findScripts() (string, error) {
	if dir := os.Getenv("HOOKBUS_CHAOS_RABBITMQ_SCRIPTS"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "rabbitmq-server")); err != nil {
			return "", fmt.Errorf("HOOKBUS_CHAOS_RABBITMQ_SCRIPTS: %w", err)
		}
		return dir, nil
	}
	if _, err := os.Stat(filepath.Join(debianScripts, "rabbitmq-server")); err == nil {
		return debianScripts, nil
	}
	path, err := exec.LookPath("rabbitmq-server")
	if err != nil {
		return "", fmt.Errorf("%w: rabbitmq-server not found (install the rabbitmq-server package or set HOOKBUS_CHAOS_RABBITMQ_SCRIPTS to the directory of rabbitmq-server and rabbitmqctl): %w", errEnvironment, err)
	}
	return filepath.Dir(path), nil
}

// startNode starts a node whose files live in dir and waits until it has
// booted. When the node exits during its start, as it does when another
// process took one of its ports, startNode tries again with new ports.
func startNode(scripts, dir string) (*rabbitNode, error) {
	var errs []error
	for try := 1; try <= nodeStartTries; try++ {
		node, exitedEarly, err := tryStartNode(scripts, filepath.Join(dir, fmt.Sprintf("node-%d", try)))
		if err == nil {
			return node, nil
		}
		errs = append(errs, fmt.Errorf("start %d: %w", try, err))
		if !exitedEarly {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// tryStartNode starts one node and waits for its boot. exitedEarly reports
// whether the node exited before it had booted.
func tryStartNode(scripts, dir string) (node *rabbitNode, exitedEarly bool, err error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, false, err
	}
	n := &rabbitNode{
		name:     "hookbus-chaos-" + randomHex(4) + "@localhost",
		dir:      dir,
		scripts:  scripts,
		amqpPort: ports[0],
		exited:   make(chan struct{}),
	}
	if err := n.writeFiles(); err != nil {
		return nil, false, err
	}
	n.env = append(environWithout("RABBITMQ_", "ERL_", "HOME="),
		"HOME="+dir,
		// An empty environment file, so that the system broker's
		// /etc/rabbitmq/rabbitmq-env.conf does not set the node name.
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(dir, "rabbitmq-env.conf"),
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(ports[0]),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(ports[1]),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"ERL_EPMD_ADDRESS=127.0.0.1",
	)

	console, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		return nil, false, err
	}
	defer console.Close()
	n.cmd = exec.Command(filepath.Join(scripts, "rabbitmq-server"))
	n.cmd.Dir = dir
	n.cmd.Env = n.env
	n.cmd.Stdout = console
	n.cmd.Stderr = console
	// Its own process group, so that stop can end the script, the Erlang
	// VM and the VM's helpers together. When the test process dies, the
	// script gets SIGTERM and stops the VM.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := n.cmd.Start(); err != nil {
		return nil, false, fmt.Errorf("start %s: %w", n.cmd.Path, err)
	}
	go func() {
		defer close(n.exited)
		_ = n.cmd.Wait()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), nodeStartTimeout)
	defer cancel()
	if err := n.awaitBoot(ctx); err != nil {
		exitedEarly = !n.running()
		if stopErr := n.stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		return nil, exitedEarly, fmt.Errorf("%w\nnode console:\n%s", err, tail(filepath.Join(dir, "console.log"), 30))
	}
	return n, false, nil
}

// writeFiles creates the node's directories, its configuration, an empty
// plugin list (no management listener that could clash with the system
// broker's) and a random Erlang cookie that the node and rabbitmqctl read
// from HOME.
func (n *rabbitNode) writeFiles() error {
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(n.dir, sub), 0o700); err != nil {
			return err
		}
	}
	files := []struct {
		name    string
		content string
		mode    os.FileMode
	}{
		{"rabbitmq.conf", fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nlog.console = false\nlog.file.level = info\n", n.amqpPort), 0o600},
		{"rabbitmq-env.conf", "", 0o600},
		{"enabled_plugins", "[].\n", 0o600},
		{".erlang.cookie", strings.ToUpper(randomHex(16)), 0o400},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(n.dir, f.name), []byte(f.content), f.mode); err != nil {
			return err
		}
	}
	return nil
}

// awaitBoot waits until rabbitmqctl reports the node booted and an AMQP
// connection opens. It returns early when the node exits.
func (n *rabbitNode) awaitBoot(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		select {
		case <-n.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() {
		cancel()
		watcher.Wait()
	}()

	// await_startup fails at once while the node has not registered with
	// epmd yet, and waits for the boot once it has.
	for {
		timeout := time.Until(deadlineOf(ctx, nodeStartTimeout)).Round(time.Second)
		_, err := n.ctl(ctx, "await_startup", "--timeout", strconv.Itoa(max(int(timeout.Seconds()), 1)))
		if err == nil {
			break
		}
		if !n.running() {
			return fmt.Errorf("node %s exited during its start", n.name)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("node %s did not boot: %w", n.name, err)
		}
		hold(ctx, 500*time.Millisecond)
	}
	return n.awaitAMQP(ctx)
}

// awaitAMQP polls the AMQP port until a connection opens or ctx is done.
func (n *rabbitNode) awaitAMQP(ctx context.Context) error {
	for {
		conn, err := amqp.DialConfig(n.url(), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
		if err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("AMQP port of node %s: %w (last dial: %w)", n.name, ctx.Err(), err)
		case <-time.After(pollInterval):
		}
	}
}

// url returns the node's AMQP URL.
func (n *rabbitNode) url() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.amqpPort)
}

// running reports whether rabbitmq-server has not exited yet.
func (n *rabbitNode) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// ctl runs rabbitmqctl against the node with the given arguments and
// returns its standard output. It runs in a process group of its own, which
// is killed when ctx ends, or after ctlTimeout when ctx has no deadline.
func (n *rabbitNode) ctl(ctx context.Context, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ctlTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, filepath.Join(n.scripts, "rabbitmqctl"), append([]string{"-n", n.name, "-q"}, args...)...)
	cmd.Dir = n.dir
	cmd.Env = n.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	return stdout.String(), nil
}

// stopApp stops the RabbitMQ application on the node: every connection
// closes and the AMQP port stops listening, while the Erlang VM runs on.
func (n *rabbitNode) stopApp(ctx context.Context) error {
	_, err := n.ctl(ctx, "stop_app")
	return err
}

// startApp starts the RabbitMQ application again and waits until the AMQP
// port accepts connections.
func (n *rabbitNode) startApp(ctx context.Context) error {
	if _, err := n.ctl(ctx, "start_app"); err != nil {
		return err
	}
	return n.awaitAMQP(ctx)
}

// closeConnections force-closes every client connection whose
// client-provided name is one of names, and returns how many it closed per
// name. RabbitMQ 3.10.8 reports success also for a connection that closed
// on its own since the listing, so the counts may include some of those.
func (n *rabbitNode) closeConnections(ctx context.Context, names ...string) (map[string]int, error) {
	out, err := n.ctl(ctx, "-s", "list_connections", "pid", "client_properties")
	if err != nil {
		return nil, err
	}
	closed := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		pid, properties, ok := strings.Cut(line, "\t")
		if !ok {
			continue
		}
		for _, name := range names {
			if !strings.Contains(properties, `{"connection_name","`+name+`"}`) {
				continue
			}
			if _, err := n.ctl(ctx, "close_connection", pid, "chaos test"); err != nil {
				return closed, err
			}
			closed[name]++
		}
	}
	return closed, nil
}

// memoryWatermark returns the arguments of set_vm_memory_high_watermark
// that restore the node's current memory high watermark: a fraction such
// as "0.4", or "absolute" and a number of bytes.
func (n *rabbitNode) memoryWatermark(ctx context.Context) ([]string, error) {
	out, err := n.ctl(ctx, "eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
	if err != nil {
		return nil, err
	}
	value := strings.TrimSpace(out)
	if _, err := strconv.ParseFloat(value, 64); err == nil {
		return []string{value}, nil
	}
	if bytes, ok := strings.CutPrefix(value, "{absolute,"); ok {
		bytes = strings.TrimSuffix(bytes, "}")
		if _, err := strconv.ParseInt(bytes, 10, 64); err == nil {
			return []string{"absolute", bytes}, nil
		}
	}
	return nil, fmt.Errorf("unexpected memory high watermark %q", value)
}

// setMemoryWatermark sets the node's memory high watermark to args, in the
// form that memoryWatermark returns.
func (n *rabbitNode) setMemoryWatermark(ctx context.Context, args ...string) error {
	_, err := n.ctl(ctx, append([]string{"set_vm_memory_high_watermark"}, args...)...)
	return err
}

// memoryAlarm reports whether the node's memory alarm is on.
func (n *rabbitNode) memoryAlarm(ctx context.Context) (bool, error) {
	out, err := n.ctl(ctx, "eval", "rabbit_alarm:get_alarms().")
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "resource_limit,memory"), nil
}

// queueDepth returns the ready and the unacknowledged messages of the
// queue, as rabbitmqctl list_queues reports them.
func (n *rabbitNode) queueDepth(ctx context.Context, queue string) (ready, unacked int, err error) {
	out, err := n.ctl(ctx, "-s", "list_queues", "name", "messages_ready", "messages_unacknowledged")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Split(line, "\t")
		if len(fields) != 3 || fields[0] != queue {
			continue
		}
		ready, err1 := strconv.Atoi(fields[1])
		unacked, err2 := strconv.Atoi(fields[2])
		if err := errors.Join(err1, err2); err != nil {
			return 0, 0, fmt.Errorf("list_queues line %q: %w", line, err)
		}
		return ready, unacked, nil
	}
	return 0, 0, fmt.Errorf("queue %s not listed by rabbitmqctl list_queues", queue)
}

// stop shuts the node down with rabbitmqctl shutdown, which returns after
// the VM has exited, and waits for rabbitmq-server to exit. When the node
// does not respond, it sends SIGTERM to rabbitmq-server, which stops the VM,
// and as a last resort it kills the node's process group. It returns an
// error when the node had to be killed or is still running.
func (n *rabbitNode) stop() error {
	var errs []error
	if n.running() {
		ctx, cancel := context.WithTimeout(context.Background(), nodeStopTimeout)
		_, err := n.ctl(ctx, "shutdown")
		cancel()
		if err != nil && n.running() {
			errs = append(errs, err)
		}
	}
	if n.waitExit(nodeExitTimeout) {
		return errors.Join(errs...)
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		errs = append(errs, fmt.Errorf("send SIGTERM to rabbitmq-server: %w", err))
	}
	if n.waitExit(nodeExitTimeout) {
		return errors.Join(errs...)
	}
	errs = append(errs, fmt.Errorf("node %s still running %s after SIGTERM, killing its process group %d", n.name, nodeExitTimeout, n.cmd.Process.Pid))
	if err := syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		errs = append(errs, fmt.Errorf("kill process group %d: %w", n.cmd.Process.Pid, err))
	}
	if !n.waitExit(nodeExitTimeout) {
		errs = append(errs, fmt.Errorf("node %s still running after SIGKILL", n.name))
	}
	return errors.Join(errs...)
}

// waitExit waits up to timeout for rabbitmq-server to exit and reports
// whether it did.
func (n *rabbitNode) waitExit(timeout time.Duration) bool {
	select {
	case <-n.exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// logTail returns the last lines of the node's log file.
func (n *rabbitNode) logTail(lines int) string {
	return tail(filepath.Join(n.dir, "log", n.name+".log"), lines)
}

// freePorts returns count distinct loopback ports that were free a moment
// ago. All are held open until each is chosen, so they differ.
func freePorts(count int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range count {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// environWithout returns the environment of the test process without the
// variables whose names start with one of the prefixes.
func environWithout(prefixes ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		keep := true
		for _, prefix := range prefixes {
			if strings.HasPrefix(kv, prefix) {
				keep = false
				break
			}
		}
		if keep {
			env = append(env, kv)
		}
	}
	return env
}

// tail returns the last lines of a file, or a note when it cannot be read.
func tail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	var last []string
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		last = append(last, scanner.Text())
		if len(last) > lines {
			last = last[1:]
		}
	}
	return strings.Join(last, "\n")
}

// randomHex returns 2×n random hexadecimal digits.
func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// deadlineOf returns ctx's deadline, or now plus fallback when it has none.
func deadlineOf(ctx context.Context, fallback time.Duration) time.Time {
	if deadline, ok := ctx.Deadline(); ok {
		return deadline
	}
	return time.Now().Add(fallback)
}
