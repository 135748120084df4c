// Package service runs the agent as an operating system service through
// kardianos/service: systemd (and SysV/OpenRC/Upstart) on Linux, launchd on
// macOS, the Service Control Manager on Windows.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"

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
}

func (p *program) Start(ks.Service) error {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.run(ctx); err != nil {
			p.err = err
			p.log.Error("agent stopped", "error", err.Error())
			// Exit non-zero so the service manager restarts the agent.
			os.Exit(1)
		}
	}()
	return nil
}

func (p *program) Stop(ks.Service) error {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
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
		},
		Dependencies: []string{"After=network-online.target", "Wants=network-online.target"},
	}
	if runtime.GOOS == "windows" {
		cfg.Dependencies = nil
	}
	return ks.New(&program{run: run, log: log}, cfg)
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
