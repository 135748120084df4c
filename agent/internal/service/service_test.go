package service

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDetectNamesTheSystemOrSaysWhatIsMissing(t *testing.T) {
	for _, tc := range []struct {
		name, goos, platform, init1 string
		inittab                     bool
		want, missing               string
	}{
		{"systemd", "linux", "linux-systemd", "systemd", false, "systemd", ""},
		{"openrc", "linux", "linux-openrc", "init", true, "OpenRC", ""},
		{"a running SysV init", "linux", "unix-systemv", "init", true, "SysV init", ""},
		{"a container", "linux", "unix-systemv", "bash", false, "SysV init", `process 1 is "bash", and there is no /etc/inittab`},
		{"an init without inittab", "linux", "unix-systemv", "init", false, "SysV init", "no /etc/inittab"},
		{"process 1 unreadable", "linux", "unix-systemv", "", true, "SysV init", "process 1 could not be read"},
		{"launchd", "darwin", "darwin-launchd", "", false, "launchd", ""},
		{"windows", "windows", "windows-service", "", false, "the Windows Service Control Manager", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := detect(tc.goos, tc.platform, tc.init1, tc.inittab)
			assert.Equal(t, tc.want, sys.Name)
			assert.Equal(t, tc.platform, sys.Platform)
			if tc.missing == "" {
				assert.Empty(t, sys.Missing)
				return
			}
			assert.Contains(t, sys.Missing, "no supported service manager is running")
			assert.Contains(t, sys.Missing, tc.missing)
		})
	}
}

// TestStopIsLoggedWithItsReason: the log says when and why the agent
// stopped (here SIGTERM, as a service manager sends it).
func TestStopIsLoggedWithItsReason(t *testing.T) {
	var logs bytes.Buffer
	stopped := make(chan struct{})
	p := &program{
		run:     func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil },
		log:     slog.New(slog.NewTextHandler(&logs, nil)),
		signals: make(chan os.Signal, 1),
	}
	require.NoError(t, p.Start(nil))
	p.signals <- syscall.SIGTERM
	p.wait()
	require.NoError(t, p.Stop(nil))
	<-stopped
	assert.Contains(t, logs.String(), `msg="agent stopping" reason="signal SIGTERM"`)
	assert.Contains(t, logs.String(), `msg="agent stopped" reason="signal SIGTERM"`)
}
