package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/app"
)

// footprintMinutesEnv sets how long BenchmarkAgentFootprint watches the
// agent (default 3 minutes).
const footprintMinutesEnv = "EDGEWARD_BENCH_AGENT_MINUTES"

// BenchmarkAgentFootprint runs the real edgeward-agent binary (a release
// build) against a control plane at a 10 s heartbeat interval for a few
// minutes, sampling its resident memory every second and its CPU time at
// the ends, and reports its binary size. Linux only (/proc).
func BenchmarkAgentFootprint(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	if b.N > 1 {
		// One measurement is the whole benchmark; bigger b.N adds nothing.
		b.SkipNow()
	}
	minutes := 3.0
	if v, err := strconv.ParseFloat(os.Getenv(footprintMinutesEnv), 64); err == nil && v > 0 {
		minutes = v
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "edgeward-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/edgeward/edgeward/agent/cmd/edgeward-agent")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build agent: %v\n%s", err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	sizeMB := float64(st.Size()) / (1 << 20)

	env := apitest.StartWith(b, func(c *app.ServeConfig) { c.AgentHeartbeatInterval = 10 * time.Second })
	_, token := env.EnrollmentToken(b, nil)
	state := filepath.Join(dir, "state")
	enroll := exec.Command(bin, "enroll", "--server", env.Server.URL, "--token", token, "--state-dir", state)
	if out, err := enroll.CombinedOutput(); err != nil {
		b.Fatalf("enroll: %v\n%s", err, out)
	}
	agent := exec.Command(bin, "run", "--state-dir", state)
	var logs bytes.Buffer
	agent.Stderr = &logs
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		_ = agent.Wait()
	}()
	pid := agent.Process.Pid

	// Let it start and send its first report before measuring steady state.
	time.Sleep(2 * time.Second)
	cpu0, err := cpuTicks(pid)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var maxRSS, sumRSS float64
	samples := 0
	b.ResetTimer()
	for time.Since(start) < time.Duration(minutes*float64(time.Minute)) {
		rss, err := rssMB(pid)
		if err != nil {
			b.Fatalf("agent exited: %v\n%s", err, logs.String())
		}
		maxRSS = max(maxRSS, rss)
		sumRSS += rss
		samples++
		time.Sleep(time.Second)
	}
	cpu1, err := cpuTicks(pid)
	if err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	cpuPct := 100 * (float64(cpu1-cpu0) / 100) / elapsed.Seconds() // USER_HZ is 100 on Linux
	b.ReportMetric(maxRSS, "max-RSS-MB")
	b.ReportMetric(cpuPct, "CPU-%")
	b.ReportMetric(sizeMB, "binary-MB")
	window := fmt.Sprintf("%.0f s at a 10 s interval", elapsed.Seconds())
	report(figure{name: "agent resident memory (max)", value: maxRSS, unit: "MB", target: "<= 25 MB",
		against: fmt.Sprintf("mean %.1f MB over %s", sumRSS/float64(samples), window)})
	report(figure{name: "agent CPU", value: cpuPct, unit: "% of one core", target: "<= 0.5%", against: window})
	report(figure{name: "agent binary size (linux/" + runtime.GOARCH + ", -s -w)", value: sizeMB, unit: "MB", target: "-", against: "-"})
}

func rssMB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// cpuTicks is utime+stime of a process, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces, in parentheses).
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return utime + stime, nil
}
