// Command loadgen is the router benchmark's load generator: a fixed-rate open loop (latency
// measured from each request's scheduled time, so a stall is not hidden) or a closed loop for
// maximum throughput. Prints one JSON object.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	URL        string  `json:"url,omitempty"`
	Mode       string  `json:"mode"`
	Rate       float64 `json:"target_rps,omitempty"`
	Requests   int     `json:"requests"`
	Errors     int64   `json:"errors"`
	DurationS  float64 `json:"duration_s"`
	Throughput float64 `json:"throughput_rps"`
	P50ms      float64 `json:"p50_ms"`
	P90ms      float64 `json:"p90_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
}

// urlList is a repeatable --url flag.
type urlList []string

func (u *urlList) String() string     { return fmt.Sprint(*u) }
func (u *urlList) Set(v string) error { *u = append(*u, v); return nil }

func main() {
	var urls urlList
	flag.Var(&urls, "url", "target URL; repeat it to interleave several targets in one open loop "+
		"(request i goes to URL i mod n, so every target sees the same moment-to-moment machine noise)")
	rate := flag.Float64("rate", 0, "requests per second per URL (open loop); 0 = closed loop (first URL)")
	duration := flag.Duration("duration", 5*time.Second, "measurement time")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warm-up time")
	conns := flag.Int("connections", 32, "closed loop: concurrent connections; open loop: max in flight")
	bodyFile := flag.String("body-file", "", "request body file (POST)")
	count := flag.Int64("requests", 0, "closed loop: stop after this many requests instead of --duration "+
		"(for counting instructions per request under a profiler)")
	flag.Parse()
	body, err := os.ReadFile(*bodyFile)
	if err != nil || len(urls) == 0 {
		fmt.Fprintln(os.Stderr, "loadgen: --url and a readable --body-file are required:", err)
		os.Exit(2)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns * 2, DisableCompression: true}}
	send := func(url string) bool {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	for _, u := range urls {
		if *warmup > 0 {
			closedLoop(func() bool { return send(u) }, *conns, *warmup)
		}
	}
	if *rate > 0 {
		_ = json.NewEncoder(os.Stdout).Encode(openLoop(send, urls, *rate, *conns, *duration))
		return
	}
	if *count > 0 {
		r := countedLoop(func() bool { return send(urls[0]) }, *conns, *count)
		r.URL = urls[0]
		_ = json.NewEncoder(os.Stdout).Encode([]result{r})
		return
	}
	r := closedLoop(func() bool { return send(urls[0]) }, *conns, *duration)
	r.URL = urls[0]
	_ = json.NewEncoder(os.Stdout).Encode([]result{r})
}

func summarize(mode string, lat []time.Duration, errors int64, elapsed time.Duration) result {
	slices.Sort(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	return result{Mode: mode, Requests: len(lat), Errors: errors, DurationS: elapsed.Seconds(),
		Throughput: float64(len(lat)) / elapsed.Seconds(), P50ms: q(0.50), P90ms: q(0.90), P99ms: q(0.99), MaxMs: q(1)}
}

func closedLoop(send func() bool, conns int, d time.Duration) result {
	var mu sync.Mutex
	var all []time.Duration
	var errors atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Since(start) < d {
				t := time.Now()
				if !send() {
					errors.Add(1)
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize("closed", all, errors.Load(), time.Since(start))
}

// countedLoop sends exactly n requests over conns connections, as fast as they are answered.
func countedLoop(send func() bool, conns int, n int64) result {
	var left atomic.Int64
	left.Store(n)
	var mu sync.Mutex
	var all []time.Duration
	var errors atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for left.Add(-1) >= 0 {
				t := time.Now()
				if !send() {
					errors.Add(1)
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize("counted", all, errors.Load(), time.Since(start))
}

// openLoop starts request i at start + i/(rate*n) whatever happened before, to URL i mod n;
// latency counts from that scheduled instant (no coordinated omission).
func openLoop(send func(string) bool, urls []string, rate float64, maxInFlight int, d time.Duration) []result {
	total := rate * float64(len(urls))
	n := int(total * d.Seconds())
	lat := make([]time.Duration, n)
	ok := make([]bool, n)
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(float64(i) / total * float64(time.Second)))
		time.Sleep(time.Until(at))
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			ok[i] = send(urls[i%len(urls)])
			lat[i] = time.Since(at)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	out := make([]result, len(urls))
	for k, u := range urls {
		var mine []time.Duration
		var errors int64
		for i := k; i < n; i += len(urls) {
			mine = append(mine, lat[i])
			if !ok[i] {
				errors++
			}
		}
		out[k] = summarize("open", mine, errors, elapsed)
		out[k].URL, out[k].Rate = u, rate
	}
	return out
}
