package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"modelrollout.dev/traffic-router/internal/split"
)

// BenchmarkForward measures the router's per-request cost over real loopback HTTP
// (client -> router -> backend), for profiling: go test -bench Forward -cpuprofile cpu.out
func BenchmarkForward(b *testing.B) {
	benchmarkForward(b, split.Split{Stable: split.Target{Version: "v1", Weight: 90},
		Candidate: &split.Target{Version: "v2", Weight: 10}})
}

// BenchmarkForwardMirrored is the same with every request copied to a shadow and compared.
func BenchmarkForwardMirrored(b *testing.B) {
	benchmarkForward(b, split.Split{Stable: split.Target{Version: "v1", Weight: 100},
		Mirror: &split.Mirror{Version: "v2", Percent: 100}})
}

// BenchmarkForwardRemembered is BenchmarkForward against a backend that sets the model
// server's x-slice, x-predictions and x-model-labels, so every answer is remembered for feedback.
func BenchmarkForwardRemembered(b *testing.B) {
	benchmarkForward(b, split.Split{Stable: split.Target{Version: "v1", Weight: 90},
		Candidate: &split.Target{Version: "v2", Weight: 10}}, "X-Slice", "young", "X-Predictions", "yes",
		"X-Model-Labels", "_silence_,_unknown_,yes,no,up,down,left,right,on,off,stop,go")
}

func benchmarkForward(b *testing.B, s split.Split, answerHeaders ...string) {
	answer := []byte(`{"predictions":[{"label":"yes","confidence":0.97}]}`)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for i := 0; i+1 < len(answerHeaders); i += 2 {
			w.Header()[answerHeaders[i]] = []string{answerHeaders[i+1]}
		}
		w.Write(answer)
	}))
	defer backend.Close()
	r, _ := newTestRouter(b, nil)
	r.SetSplit(s)
	addr := strings.TrimPrefix(backend.URL, "http://")
	r.SetEndpoints("v1", ready(addr))
	r.SetEndpoints("v2", ready(addr))
	front := httptest.NewServer(r)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	body := []byte(`{"instances": [{"audio_b64": "AAAAAA=="}]}`)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(front.URL+"/v1/models/m:predict", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
