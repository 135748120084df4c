package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	ks "github.com/kardianos/service"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edgeward/edgeward/agent/internal/identity"
	"github.com/edgeward/edgeward/agent/internal/reporter"
	"github.com/edgeward/edgeward/agent/internal/service"
)

func runCLI(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// fakeServiceManager replaces the service manager for one test and records
// what was asked of it.
func fakeServiceManager(t *testing.T, sys service.System) *[]string {
	t.Helper()
	var actions []string
	detect, control, status := detectSystem, controlService, serviceStatus
	t.Cleanup(func() { detectSystem, controlService, serviceStatus = detect, control, status })
	detectSystem = func() service.System { return sys }
	controlService = func(_ ks.Service, action string) error { actions = append(actions, action); return nil }
	serviceStatus = func(ks.Service) string { return "stopped" }
	return &actions
}

func enrolledDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "my state")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, identity.SaveConfig(dir, identity.Config{Server: "https://cp.example:8443", AgentID: "a1", TenantID: "t1"}))
	return dir
}

func TestEnrollHintsCarryTheStateDir(t *testing.T) {
	cfg := identity.Config{AgentID: "a1", TenantID: "t1"}

	msg := enrolledMessage(cfg, false, "/srv/edgeward state")
	assert.Contains(t, msg, "edgeward-agent install --state-dir '/srv/edgeward state' && edgeward-agent start")
	assert.Contains(t, msg, "edgeward-agent run --state-dir '/srv/edgeward state'\n")
	assert.Contains(t, msg, "edgeward-agent status --state-dir '/srv/edgeward state'\n")

	msg = enrolledMessage(cfg, true, service.DefaultStateDir())
	assert.NotContains(t, msg, "--state-dir", "the default needs no flag")
	assert.Contains(t, msg, "edgeward-agent run\n")
	assert.Contains(t, msg, "keeps its agent id")
}

func TestNotEnrolledNamesTheDirectoryAndHowToEnroll(t *testing.T) {
	dir := t.TempDir()
	for _, cmd := range []string{"run", "install", "status"} {
		t.Run(cmd, func(t *testing.T) {
			fakeServiceManager(t, service.System{Name: "systemd", Platform: "linux-systemd"})
			_, errOut, code := runCLI(cmd, "--state-dir", dir)
			assert.Equal(t, 1, code)
			assert.Contains(t, errOut, "this agent is not enrolled: the state directory "+dir+" holds no config.json")
			assert.Contains(t, errOut, "edgeward-agent enroll --server https://CONTROLPLANE:8443 --token TOKEN --state-dir "+dir)
		})
	}
}

func TestInstallRefusesWithoutAServiceManager(t *testing.T) {
	dir := enrolledDir(t)
	sys := service.Detect()
	sys.Missing = `no supported service manager is running: not systemd (no /run/systemd/system), Upstart, OpenRC or procd, and no SysV init to run an /etc/init.d script (process 1 is "bash", and there is no /etc/inittab)`
	actions := fakeServiceManager(t, sys)

	for _, action := range []string{"install", "start", "stop"} {
		out, errOut, code := runCLI(action, "--state-dir", dir)
		assert.Equal(t, 1, code, out)
		assert.Contains(t, errOut, action+": no supported service manager is running")
		assert.Contains(t, errOut, `process 1 is "bash"`, "it says what it found")
		assert.Contains(t, errOut, "Nothing was changed")
		assert.Contains(t, errOut, "edgeward-agent run --state-dir '"+dir+"'")
	}
	assert.Empty(t, *actions, "nothing was installed, started or stopped")

	// Uninstall still removes what an earlier install wrote.
	_, errOut, code := runCLI("uninstall", "--state-dir", dir)
	assert.Zero(t, code, errOut)
	assert.Equal(t, []string{"uninstall"}, *actions)
}

func TestInstallNamesTheServiceManager(t *testing.T) {
	dir := enrolledDir(t)
	actions := fakeServiceManager(t, service.System{Name: "systemd", Platform: "linux-systemd"})

	out, errOut, code := runCLI("install", "--state-dir", dir)
	require.Zero(t, code, errOut)
	assert.Equal(t, "Installed the edgeward-agent service for systemd; it runs: edgeward-agent run --state-dir '"+dir+"'\nStart it:  edgeward-agent start\n", out)

	out, errOut, code = runCLI("start", "--state-dir", dir)
	require.Zero(t, code, errOut)
	assert.Equal(t, "start: done; the edgeward-agent service is stopped (systemd).\n", out)
	assert.Equal(t, []string{"install", "start"}, *actions)
}

func TestStatusShowsAQueueThatCannotBeWritten(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 5, 0, 0, time.UTC)
	since := now.Add(-5 * time.Minute)
	failing := reporter.Status{
		State: reporter.StateQueueFailing, SendState: reporter.StateOK, LastSendAt: now.Add(-10 * time.Second),
		QueueUnqueued: 3, QueueError: "queue: append: write /var/lib/edgeward/queue.db: no space left on device", QueueErrorSince: since,
		QueueLastErrorKind: "no_space", QueueLastErrorAt: now.Add(-10 * time.Second),
	}
	var out bytes.Buffer
	printState(&out, failing, now)
	assert.Equal(t, ""+
		"State:        QUEUE NOT WRITABLE since 2026-11-28T10:00:00Z (5m0s ago): queue: append: write /var/lib/edgeward/queue.db: no space left on device\n"+
		"              new reports are lost (3 so far, counted and reported); the agent recovers by itself once the queue can be written\n"+
		"Sending:      ok\n"+
		"Last send:    2026-11-28T10:04:50Z (10s ago)\n"+
		"Queue:        0 reports waiting, 0 dropped, 3 not queued (last write failure: no_space at 2026-11-28T10:04:50Z)\n", out.String())

	// Sending fails too: both are said.
	failing.SendState, failing.LastError = reporter.StateRetrying, "connection refused"
	out.Reset()
	printState(&out, failing, now)
	assert.Contains(t, out.String(), "State:        QUEUE NOT WRITABLE")
	assert.Contains(t, out.String(), "Sending:      retrying: connection refused\n")

	// Recovered: the state is ok again, the count and the last failure stay.
	recovered := failing
	recovered.State, recovered.SendState, recovered.QueueError, recovered.QueueErrorSince = reporter.StateOK, reporter.StateOK, "", time.Time{}
	out.Reset()
	printState(&out, recovered, now)
	assert.Contains(t, out.String(), "State:        ok\n")
	assert.NotContains(t, out.String(), "NOT WRITABLE")
	assert.NotContains(t, out.String(), "Sending:")
	assert.Contains(t, out.String(), "3 not queued (last write failure: no_space at 2026-11-28T10:04:50Z)")
}
