// Command edgeward-agent is the Edgeward endpoint agent. It enrolls once
// with a one-time token, then runs as an operating system service: every
// interval it reports the host's facts through a durable queue to the
// control plane, over mutual TLS, and rotates its certificate before it
// expires.
//
//	edgeward-agent enroll --server https://HOST:8443 --token ewe_...
//	edgeward-agent install && edgeward-agent start
//	edgeward-agent status
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/edgeward/edgeward/agent/internal/collect"
	"github.com/edgeward/edgeward/agent/internal/identity"
	"github.com/edgeward/edgeward/agent/internal/queue"
	"github.com/edgeward/edgeward/agent/internal/reporter"
	"github.com/edgeward/edgeward/agent/internal/service"
	"github.com/edgeward/edgeward/agent/internal/transport"
	"github.com/edgeward/edgeward/proto/enrollment"
	agentv1 "github.com/edgeward/edgeward/proto/gen/edgeward/agent/v1"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	// An endpoint agent should stay small: collect garbage early rather than
	// grow. Operators may still override with GOGC / GOMEMLIMIT.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(20 << 20)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type command struct {
	name, summary string
	run           func(args []string, out, errOut io.Writer) error
}

func commands() []command {
	return []command{
		{"enroll", "Enroll this machine: --server URL --token TOKEN [--state-dir DIR] [--force].", cmdEnroll},
		{"run", "Run the agent in the foreground (what the service runs).", cmdRun},
		{"install", "Install the agent as a system service (systemd, launchd, Windows service; refused when none runs).", serviceAction("install")},
		{"uninstall", "Remove the system service (the state directory is kept).", serviceAction("uninstall")},
		{"start", "Start the system service.", serviceAction("start")},
		{"stop", "Stop the system service.", serviceAction("stop")},
		{"status", "Show identity, server, certificate, last send, queue and service state.", cmdStatus},
		{"version", "Print the version.", func(_ []string, out, _ io.Writer) error {
			_, err := fmt.Fprintln(out, "edgeward-agent", Version)
			return err
		}},
	}
}

var errUsage = errors.New("usage")

func run(args []string, out, errOut io.Writer) int {
	usage := func() {
		fmt.Fprintln(errOut, "Usage: edgeward-agent <command> [flags]\n\nCommands:")
		for _, c := range commands() {
			fmt.Fprintf(errOut, "  %-10s %s\n", c.name, c.summary)
		}
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], out, errOut)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			if err != errUsage {
				fmt.Fprintln(errOut, "edgeward-agent:", err)
			}
			return 2
		}
		fmt.Fprintln(errOut, "edgeward-agent:", err)
		return 1
	}
	fmt.Fprintf(errOut, "edgeward-agent: unknown command %q\n\n", args[0])
	usage()
	return 2
}

func flagSet(name string, errOut io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	dir := fs.String("state-dir", envOr("EDGEWARD_STATE_DIR", service.DefaultStateDir()), "state directory: key, certificates, config, queue (env EDGEWARD_STATE_DIR)")
	return fs, dir
}

// stateDirFlag is the --state-dir argument a hint must carry for dir: none
// for the default directory.
func stateDirFlag(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	if abs == filepath.Clean(service.DefaultStateDir()) {
		return ""
	}
	return " --state-dir " + shellQuote(abs)
}

// shellQuote quotes s for a command line a person copies, when it needs it.
func shellQuote(s string) string {
	safe := "/._-+:=@,%"
	if runtime.GOOS == "windows" {
		safe += `\`
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(safe, r))
	}) < 0 {
		return s
	}
	if runtime.GOOS == "windows" {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// enrolled checks that dir holds an enrollment, and says how to make one
// when it does not.
func enrolled(dir string) error {
	_, err := identity.LoadConfig(dir)
	if errors.Is(err, identity.ErrNotEnrolled) {
		return fmt.Errorf("%w\nEnroll it first:  edgeward-agent enroll --server https://CONTROLPLANE:8443 --token TOKEN%s", err, stateDirFlag(dir))
	}
	return err
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

func cmdEnroll(args []string, out, errOut io.Writer) error {
	fs, dir := flagSet("enroll", errOut)
	server := fs.String("server", os.Getenv("EDGEWARD_SERVER"), "control plane URL, e.g. https://controlplane.example:8443 (env EDGEWARD_SERVER)")
	token := fs.String("token", os.Getenv("EDGEWARD_ENROLLMENT_TOKEN"), "enrollment token, ewe_... (env EDGEWARD_ENROLLMENT_TOKEN)")
	force := fs.Bool("force", false, "replace an existing identity in the state directory (queued reports are kept)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *server == "" || *token == "" {
		fs.Usage()
		return fmt.Errorf("%w: --server and --token are required", errUsage)
	}
	srv, err := transport.ServerURL(*server)
	if err != nil {
		return err
	}
	if _, err := enrollment.Parse(*token); err != nil {
		return err
	}
	if identity.Exists(*dir) && !*force {
		return fmt.Errorf("%s already holds an agent identity; use --force to enroll again", *dir)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	// Holding the queue's lock keeps a running agent and this command from
	// changing the state directory at the same time.
	q, err := queue.Open(filepath.Join(*dir, reporter.QueueFile), queue.Options{})
	if errors.Is(err, queue.ErrLocked) {
		return fmt.Errorf("an agent is running with %s; stop it first (edgeward-agent stop)", *dir)
	}
	if err != nil {
		return err
	}
	defer func() { _ = q.Close() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	facts, err := collect.Facts(ctx, Version)
	if err != nil {
		return fmt.Errorf("read host facts: %w", err)
	}
	if facts.GetMachineId() == "" {
		return errors.New("could not read a machine id for this host (e.g. /etc/machine-id); one identity per machine needs one")
	}
	previous, _ := identity.Peek(*dir)
	enr, err := identity.BeginEnrollment(*dir)
	if err != nil {
		return fmt.Errorf("save key: %w", err)
	}
	csr, err := identity.CSR(enr.Key, facts.GetHostname())
	if err != nil {
		return err
	}
	req := &agentv1.EnrollRequest{Token: strings.TrimSpace(*token), CsrDer: csr, Facts: facts}
	if previous != nil {
		// Prove this machine holds its current identity, so it keeps its
		// agent id.
		digest := sha256.Sum256(csr)
		if sig, err := ecdsa.SignASN1(rand.Reader, previous.Key, digest[:]); err == nil {
			req.PreviousCertificateDer, req.PreviousSignature = previous.Cert.Raw, sig
		}
	}
	resp, err := transport.Enroll(ctx, srv, req)
	if err != nil {
		enr.Abandon()
		return fmt.Errorf("enroll with %s: %w", srv, err)
	}
	cfg := identity.Config{
		Server: srv, AgentID: resp.GetAgentId(), TenantID: resp.GetTenantId(),
		HeartbeatIntervalSeconds: int(resp.GetHeartbeatInterval().AsDuration() / time.Second), EnrolledAt: time.Now().UTC(),
	}
	if _, err := enr.Enrolled(cfg, resp.GetCertificateDer(), resp.GetCaCertificatesDer()[0]); err != nil {
		return err
	}
	_, err = io.WriteString(out, enrolledMessage(cfg, resp.GetReenrolled(), *dir))
	return err
}

// enrolledMessage tells what enroll did and what to run next, with the
// state directory in each command when it is not the default.
func enrolledMessage(cfg identity.Config, reenrolled bool, dir string) string {
	again := ""
	if reenrolled {
		again = " (this machine was enrolled before: it keeps its agent id)"
	}
	flag := stateDirFlag(dir)
	return fmt.Sprintf("Enrolled as agent %s in tenant %s%s.\nState directory: %s\n"+
		"Start it as a service:  edgeward-agent install%s && edgeward-agent start\n"+
		"or in the foreground:   edgeward-agent run%s\n"+
		"Check it:               edgeward-agent status%s\n",
		cfg.AgentID, cfg.TenantID, again, dir, flag, flag, flag)
}

func logger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("EDGEWARD_LOG_LEVEL") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func cmdRun(args []string, _, errOut io.Writer) error {
	fs, dir := flagSet("run", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	log := logger(errOut)
	runLoop := func(ctx context.Context) error {
		return reporter.Run(ctx, reporter.Options{Dir: *dir, Version: Version, Logger: log})
	}
	// Fail fast, before handing over to the service manager, when the agent
	// cannot run at all.
	if err := enrolled(*dir); err != nil {
		return err
	}
	s, err := service.New(*dir, runLoop, log)
	if err != nil {
		return err
	}
	return s.Run()
}

// Seams for the tests: which service manager runs, and acting on it.
var (
	detectSystem   = service.Detect
	controlService = service.Control
	serviceStatus  = service.Status
)

func serviceAction(action string) func([]string, io.Writer, io.Writer) error {
	return func(args []string, out, errOut io.Writer) error {
		fs, dir := flagSet(action, errOut)
		if err := parse(fs, args); err != nil {
			return err
		}
		if action == "install" {
			if err := enrolled(*dir); err != nil {
				return err
			}
		}
		sys := detectSystem()
		// Uninstall still runs: it removes what an earlier install wrote.
		if sys.Missing != "" && action != "uninstall" {
			return fmt.Errorf("%s: %s.\nNothing was changed. Run the agent under your own supervisor instead:  edgeward-agent run%s",
				action, sys.Missing, stateDirFlag(*dir))
		}
		s, err := service.New(*dir, nil, nil)
		if err != nil {
			return err
		}
		if err := controlService(s, action); err != nil {
			return fmt.Errorf("%w (service manager: %s)", err, sys.Name)
		}
		abs, _ := filepath.Abs(*dir)
		switch action {
		case "install":
			_, err = fmt.Fprintf(out, "Installed the %s service for %s; it runs: edgeward-agent run --state-dir %s\nStart it:  edgeward-agent start\n",
				service.Name, sys.Name, shellQuote(abs))
		case "uninstall":
			_, err = fmt.Fprintf(out, "Removed the %s service from %s; the state directory %s is kept.\n", service.Name, sys.Name, abs)
		default:
			_, err = fmt.Fprintf(out, "%s: done; the %s service is %s (%s).\n", action, service.Name, serviceStatus(s), sys.Name)
		}
		return err
	}
}

func cmdStatus(args []string, out, errOut io.Writer) error {
	fs, dir := flagSet("status", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := enrolled(*dir); err != nil {
		return err
	}
	id, err := identity.Peek(*dir)
	if err != nil {
		return err
	}
	now := time.Now()
	p := func(k, format string, a ...any) { fmt.Fprintf(out, "%-13s %s\n", k+":", fmt.Sprintf(format, a...)) }
	p("Agent", "%s (tenant %s)", id.Config.AgentID, id.Config.TenantID)
	p("Server", "%s", id.Config.Server)
	p("Certificate", "serial %x, expires %s (%s)", id.Cert.SerialNumber, id.Cert.NotAfter.UTC().Format(time.RFC3339), until(now, id.Cert.NotAfter))
	if sys := detectSystem(); sys.Missing != "" {
		p("Service", "none: %s", sys.Missing)
	} else if s, err := service.New(*dir, nil, nil); err == nil {
		p("Service", "%s (%s)", serviceStatus(s), sys.Name)
	}
	st, err := reporter.ReadStatus(*dir)
	if err != nil {
		p("State", "never run")
		return nil
	}
	printState(out, st, now)
	p("Interval", "%s", st.Interval)
	p("Rotation", "due %s", st.RotateAt.Format(time.RFC3339))
	p("Updated", "%s (pid %d)", st.UpdatedAt.Format(time.RFC3339), st.PID)
	return nil
}

// printState writes what status.json says of sending and of the queue. A
// queue that cannot be written comes first: it loses reports.
func printState(out io.Writer, st reporter.Status, now time.Time) {
	p := func(k, format string, a ...any) {
		if k != "" {
			k += ":"
		}
		fmt.Fprintf(out, "%-13s %s\n", k, fmt.Sprintf(format, a...))
	}
	ago := func(t time.Time) string {
		return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), now.Sub(t).Round(time.Second))
	}
	send := st.SendState
	if send == "" { // written by an agent before send_state existed
		send = st.State
	}
	switch {
	case send == reporter.StateRefused:
		p("State", "REFUSED by the control plane: %s", st.LastError)
	case st.QueueError != "":
		p("State", "QUEUE NOT WRITABLE since %s: %s", ago(st.QueueErrorSince), st.QueueError)
		p("", "new reports are lost (%d so far, counted and reported); the agent recovers by itself once the queue can be written", st.QueueUnqueued)
	case send == reporter.StateRetrying:
		p("State", "retrying: %s", st.LastError)
	default:
		p("State", "%s", send)
	}
	switch {
	case send == reporter.StateRefused && st.QueueError != "":
		p("Queue error", "not writable since %s: %s", ago(st.QueueErrorSince), st.QueueError)
	case st.QueueError != "" && send == reporter.StateRetrying:
		p("Sending", "retrying: %s", st.LastError)
	case st.QueueError != "":
		p("Sending", "%s", send)
	}
	if st.LastSendAt.IsZero() {
		p("Last send", "never")
	} else {
		p("Last send", "%s", ago(st.LastSendAt))
	}
	queue := fmt.Sprintf("%d reports waiting, %d dropped", st.QueueDepth, st.QueueDropped)
	if st.QueueUnqueued > 0 || st.QueueLastErrorKind != "" {
		queue += fmt.Sprintf(", %d not queued", st.QueueUnqueued)
		if st.QueueLastErrorKind != "" && !st.QueueLastErrorAt.IsZero() {
			queue += fmt.Sprintf(" (last write failure: %s at %s)", st.QueueLastErrorKind, st.QueueLastErrorAt.Format(time.RFC3339))
		}
	}
	p("Queue", "%s", queue)
}

func until(now, t time.Time) string {
	d := t.Sub(now)
	if d < 0 {
		return "EXPIRED"
	}
	if d > 48*time.Hour {
		return fmt.Sprintf("in %d days", int(d.Hours()/24))
	}
	return "in " + d.Round(time.Second).String()
}
