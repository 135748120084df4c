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
		{"install", "Install the agent as a system service (systemd, launchd, Windows service).", serviceAction("install")},
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
	again := ""
	if resp.GetReenrolled() {
		again = " (this machine was enrolled before: it keeps its agent id)"
	}
	_, err = fmt.Fprintf(out, "Enrolled as agent %s in tenant %s%s.\nState directory: %s\nStart it as a service:  edgeward-agent install && edgeward-agent start\nor in the foreground:   edgeward-agent run\n",
		cfg.AgentID, cfg.TenantID, again, *dir)
	return err
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
	if _, err := identity.LoadConfig(*dir); err != nil {
		return err
	}
	s, err := service.New(*dir, runLoop, log)
	if err != nil {
		return err
	}
	return s.Run()
}

func serviceAction(action string) func([]string, io.Writer, io.Writer) error {
	return func(args []string, out, errOut io.Writer) error {
		fs, dir := flagSet(action, errOut)
		if err := parse(fs, args); err != nil {
			return err
		}
		if action == "install" {
			if _, err := identity.LoadConfig(*dir); err != nil {
				return err
			}
		}
		s, err := service.New(*dir, nil, nil)
		if err != nil {
			return err
		}
		if err := service.Control(s, action); err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s: done (service %s)\n", action, service.Status(s))
		return err
	}
}

func cmdStatus(args []string, out, errOut io.Writer) error {
	fs, dir := flagSet("status", errOut)
	if err := parse(fs, args); err != nil {
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
	if s, err := service.New(*dir, nil, nil); err == nil {
		p("Service", "%s", service.Status(s))
	}
	st, err := reporter.ReadStatus(*dir)
	if err != nil {
		p("State", "never run")
		return nil
	}
	switch st.State {
	case reporter.StateRefused:
		p("State", "REFUSED by the control plane: %s", st.LastError)
	case reporter.StateRetrying:
		p("State", "retrying: %s", st.LastError)
	default:
		p("State", "%s", st.State)
	}
	if st.LastSendAt.IsZero() {
		p("Last send", "never")
	} else {
		p("Last send", "%s (%s ago)", st.LastSendAt.Format(time.RFC3339), now.Sub(st.LastSendAt).Round(time.Second))
	}
	p("Queue", "%d reports waiting, %d dropped", st.QueueDepth, st.QueueDropped)
	p("Interval", "%s", st.Interval)
	p("Rotation", "due %s", st.RotateAt.Format(time.RFC3339))
	p("Updated", "%s (pid %d)", st.UpdatedAt.Format(time.RFC3339), st.PID)
	return nil
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
