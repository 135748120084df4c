package bench

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeward/edgeward/controlplane/internal/apitest"
	"github.com/edgeward/edgeward/controlplane/internal/httpx"
)

// heapPeak samples the live heap every millisecond while run runs and
// returns the largest growth over the heap before it.
func heapPeak(run func()) uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	runtime.GC()
	base := read()
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			if v := read(); v > peak {
				peak = v
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	run()
	close(stop)
	wg.Wait()
	if peak < base {
		return 0
	}
	return peak - base
}

// BenchmarkAdversarialJSON posts a body of the largest size the API takes
// (1 MB) that nests as deep as it can, once quadratic in memory (975 MB at
// 60 KB, out of memory at 117 KB), and prints the server's peak heap growth
// beside the same-size flat body it is compared with. Server and client
// share this process, so the figures include the client's copy of the body.
func BenchmarkAdversarialJSON(b *testing.B) {
	env := benchEnv(b)
	c := env.Client(b, env.AdminToken)
	size := httpx.DefaultMaxBodyBytes - 16
	deep := apitest.Raw(strings.Repeat("[", size))
	flat := apitest.Raw("[" + strings.Repeat("1,", size/2-1) + "1]")
	measure := func(body apitest.Raw, status int) (uint64, time.Duration) {
		var worst uint64
		start := time.Now()
		for range b.N {
			peak := heapPeak(func() {
				if r := c.Do(http.MethodPost, "/api/v1/tickets", body); r.Status != status {
					b.Fatalf("status %d: %s", r.Status, r.Body)
				}
			})
			worst = max(worst, peak)
		}
		return worst, time.Since(start) / time.Duration(b.N)
	}
	b.ResetTimer()
	deepPeak, deepTime := measure(deep, http.StatusBadRequest)
	flatPeak, flatTime := measure(flat, http.StatusUnprocessableEntity)
	b.ReportMetric(float64(deepPeak)/(1<<20), "MB-peak-deep")
	b.ReportMetric(float64(flatPeak)/(1<<20), "MB-peak-flat")
	report(figure{name: "1 MB body nested 1 048 560 deep: peak heap growth", value: float64(deepPeak) / (1 << 20), unit: "MB",
		target:  "no more than a flat body's",
		against: fmt.Sprintf("1 MB flat array: %.1f MB; refused in %v (flat: %v)", float64(flatPeak)/(1<<20), deepTime.Round(time.Microsecond), flatTime.Round(time.Microsecond))})
}
