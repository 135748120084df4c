// Package service runs the agent as an operating system service through
// kardianos/service: systemd (and Upstart, OpenRC, a running SysV init) on
// Linux, launchd on macOS, the Service Control Manager on Windows. It says
// which of them it found, and when none that would run the agent is there
// (a container, say), it says that instead of installing for nothing.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"

	ks "github.com/kardianos/service"
)

// Name is the service's name in the service manager.
const Name = "edgeward-agent"

// DefaultStateDir is where the agent keeps its identity and queue.
func DefaultStateDir() string {
	switch runtime.GOOS {
	case "windows":
		base := os.Getenv("ProgramData")
		if base == "" {
			base = `C:\ProgramData`
		}
		return filepath.Join(base, "Edgeward")
	case "darwin":
		return "/Library/Application Support/Edgeward"
	}
	return "/var/lib/edgeward"
}

// RunFunc is the agent's main loop.
type RunFunc func(ctx context.Context) error

// program adapts RunFunc to kardianos' Start/Stop.
type program struct {
	run    RunFunc
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
	err    error

	// signals delivers the signals that stop the agent in the foreground
	// and under the Unix service managers.
	signals chan os.Signal
	mu      sync.Mutex
	reason  string // why the agent stops, for the log
}

// stopSignals stop the agent: what service managers send, and Ctrl-C.
var stopSignals = []os.Signal{syscall.SIGTERM, os.Interrupt}

// wait blocks until a stop signal arrives and remembers which, so the log
// says why the agent stopped. kardianos calls it (the RunWait option)
// instead of its own signal handling; the Windows service manager stops the
// agent without a signal.
func (p *program) wait() {
	signal.Notify(p.signals, stopSignals...)
	defer signal.Stop(p.signals)
	sig := <-p.signals
	name := sig.String()
	switch sig {
	case syscall.SIGTERM:
		name = "SIGTERM"
	case os.Interrupt:
		name = "SIGINT"
	}
	p.mu.Lock()
	p.reason = "signal " + name
	p.mu.Unlock()
}

func (p *program) Start(ks.Service) error {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.run(ctx); err != nil {
			p.err = err
			p.log.Error("agent stopped by an error; exiting so the service manager restarts it", "error", err.Error())
			// Exit non-zero so the service manager restarts the agent.
			os.Exit(1)
		}
	}()
	return nil
}

func (p *program) Stop(ks.Service) error {
	p.mu.Lock()
	reason := p.reason
	p.mu.Unlock()
	if reason == "" {
		// No signal: the Windows service manager, or Ctrl-C in a Windows
		// console.
		reason = "the service manager asked it to stop"
		if ks.Interactive() {
			reason = "interrupted"
		}
	}
	p.log.Info("agent stopping", "reason", reason)
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	p.log.Info("agent stopped", "reason", reason)
	return nil
}

// New describes the agent service for stateDir.
func New(stateDir string, run RunFunc, log *slog.Logger) (ks.Service, error) {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &program{run: run, log: log, signals: make(chan os.Signal, 1)}
	cfg := &ks.Config{
		Name:        Name,
		DisplayName: "Edgeward agent",
		Description: "Reports this endpoint and its network neighbourhood to the Edgeward control plane.",
		Arguments:   []string{"run", "--state-dir", abs},
		Option: ks.KeyValue{
			"Restart":                "always", // systemd
			"SuccessExitStatus":      "",
			"KeepAlive":              true, // launchd
			"RunAtLoad":              true,
			"OnFailure":              "restart", // windows
			"OnFailureDelayDuration": "5s",
			"DelayedAutoStart":       true,
			"RunWait":                p.wait,
		},
		Dependencies: []string{"After=network-online.target", "Wants=network-online.target"},
	}
	if runtime.GOOS == "windows" {
		cfg.Dependencies = nil
	}
	return ks.New(p, cfg)
}

// Control runs install, uninstall, start, stop or restart.
func Control(s ks.Service, action string) error {
	if err := ks.Control(s, action); err != nil {
		if errors.Is(err, ks.ErrNotInstalled) {
			return fmt.Errorf("the %s service is not installed: run edgeward-agent install", Name)
		}
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}

// System is the service manager the agent would be installed for.
type System struct {
	// Name says which it is, for people: systemd, launchd, SysV init, ...
	Name string
	// Platform is kardianos/service's name for it, e.g. linux-systemd.
	Platform string
	// Missing, when not empty, says that no service manager that would run
	// the agent is running, and what was found instead.
	Missing string
}

// names are people's names for kardianos/service's platforms.
var names = map[string]string{
	"linux-systemd":   "systemd",
	"linux-upstart":   "Upstart",
	"linux-openrc":    "OpenRC",
	"linux-rcs":       "BusyBox init (rcS)",
	"linux-procd":     "procd",
	"unix-systemv":    "SysV init",
	"darwin-launchd":  "launchd",
	"windows-service": "the Windows Service Control Manager",
}

// Detect says which service manager kardianos/service will use, and
// whether it is really there. On Linux it falls back to SysV init scripts
// whenever it recognises nothing else; those run only under a SysV init,
// so without one (a container, a minimal image) Detect reports it missing.
func Detect() System {
	init1 := ""
	if b, err := os.ReadFile("/proc/1/comm"); err == nil {
		init1 = strings.TrimSpace(string(b))
	}
	_, err := os.Stat("/etc/inittab")
	return detect(runtime.GOOS, ks.ChosenSystem().String(), init1, err == nil)
}

// detect is Detect on what it read: the platform kardianos chose, the name
// of process 1, and whether /etc/inittab exists.
func detect(goos, platform, init1 string, inittab bool) System {
	sys := System{Name: names[platform], Platform: platform}
	if sys.Name == "" {
		sys.Name = platform
	}
	if goos == "linux" && platform == "unix-systemv" && (init1 != "init" || !inittab) {
		found := fmt.Sprintf("process 1 is %q", init1)
		if init1 == "" {
			found = "process 1 could not be read"
		}
		if !inittab {
			found += ", and there is no /etc/inittab"
		}
		sys.Missing = "no supported service manager is running: not systemd (no /run/systemd/system), Upstart, OpenRC or procd, " +
			"and no SysV init to run an /etc/init.d script (" + found + ")"
	}
	return sys
}

// Status describes the service manager's view of the agent.
func Status(s ks.Service) string {
	st, err := s.Status()
	switch {
	case errors.Is(err, ks.ErrNotInstalled):
		return "not installed"
	case err != nil:
		return "no service manager answered (" + err.Error() + ")"
	case st == ks.StatusRunning:
		return "running"
	case st == ks.StatusStopped:
		return "stopped"
	}
	return "unknown"
}
