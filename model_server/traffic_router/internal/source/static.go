// Package source feeds the router its split and endpoints: from the Kubernetes API (a
// ModelRollout informer and an EndpointSlice informer) or from a static JSON file.
package source

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/split"
)

// Sink receives what a source observes (implemented by proxy.Router).
type Sink interface {
	SetSplit(split.Split)
	SetEndpoints(version string, addrs backend.Addrs)
	Split() *split.Split
}

// Static is the parsed --static-config file. Each part is optional: what is present replaces
// the corresponding watch (traffic -> ModelRollout status, endpoints and/or notReadyEndpoints
// -> EndpointSlices).
type Static struct {
	Split        *split.Split             // nil when the file has no "traffic"
	Endpoints    map[string]backend.Addrs // nil unless HasEndpoints; file entries are ready or NotServing
	HasEndpoints bool                     // the file has "endpoints" or "notReadyEndpoints"
}

// ParseStatic validates a static config document; errors name the JSON field.
func ParseStatic(data []byte) (Static, error) {
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return Static{}, fmt.Errorf("not a JSON object: %v", err)
	}
	for k := range doc {
		if k != "traffic" && k != "stickyHeader" && k != "endpoints" && k != "notReadyEndpoints" {
			return Static{}, fmt.Errorf("%s: unknown field; expected traffic, stickyHeader, endpoints, notReadyEndpoints", k)
		}
	}
	var st Static
	if raw, ok := doc["traffic"]; ok {
		t, ok := raw.(map[string]any)
		if !ok {
			return st, fmt.Errorf("traffic: expected an object {stable, candidate?, mirror?}")
		}
		sp, err := split.ParseTraffic(t, "traffic")
		if err != nil {
			return st, err
		}
		if sp.StickyHeader, err = split.ParseHeaderName(doc["stickyHeader"], "stickyHeader"); err != nil {
			return st, err
		}
		sp.Source = "static"
		st.Split = &sp
	}
	return st, parseAllEndpoints(doc, &st)
}

// parseAllEndpoints fills st.Endpoints from "endpoints" (ready) and "notReadyEndpoints" (listed
// but not ready, as an EndpointSlice lists a pod failing its readiness probe).
func parseAllEndpoints(doc map[string]any, st *Static) error {
	for _, field := range []string{"endpoints", "notReadyEndpoints"} {
		raw, ok := doc[field]
		if !ok {
			continue
		}
		eps, err := parseEndpoints(field, raw)
		if err != nil {
			return err
		}
		if st.Endpoints == nil {
			st.Endpoints, st.HasEndpoints = map[string]backend.Addrs{}, true
		}
		for version, addrs := range eps {
			a := st.Endpoints[version]
			if field == "endpoints" {
				a.Ready = addrs
			} else {
				a.NotServing = addrs
			}
			st.Endpoints[version] = a
		}
	}
	return nil
}

func parseEndpoints(field string, raw any) (map[string][]string, error) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: expected an object {version: [\"host:port\", ...]}", field)
	}
	out := map[string][]string{}
	for version, list := range m {
		items, ok := list.([]any)
		if !ok {
			return nil, fmt.Errorf("%s.%s: expected a list of \"host:port\" strings", field, version)
		}
		out[version] = []string{}
		for i, it := range items {
			s, ok := it.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("%s.%s[%d]: expected a \"host:port\" string, got %v", field, version, i, it)
			}
			out[version] = append(out[version], s)
		}
	}
	return out, nil
}

// StartStatic loads the file (an invalid file is a startup error), applies it, and keeps
// re-reading it every interval; a malformed edit is logged and ignored so the last good state
// stays in force (as it does when the API server blips). Returns what the file provides.
func StartStatic(ctx context.Context, path string, interval time.Duration, sink Sink, log *slog.Logger) (Static, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Static{}, fmt.Errorf("--static-config: %v", err)
	}
	st, err := ParseStatic(data)
	if err != nil {
		return st, fmt.Errorf("--static-config %s: %v", path, err)
	}
	known := map[string]bool{}
	st.apply(sink, known)
	go watchStatic(ctx, path, data, interval, sink, known, log)
	return st, nil
}

func (st Static) apply(sink Sink, known map[string]bool) {
	if st.Split != nil {
		sink.SetSplit(*st.Split)
	}
	if !st.HasEndpoints {
		return
	}
	for version, addrs := range st.Endpoints {
		sink.SetEndpoints(version, addrs)
		known[version] = true
	}
	for version := range known {
		if _, ok := st.Endpoints[version]; !ok {
			sink.SetEndpoints(version, backend.Addrs{}) // a version removed from the file has no endpoints
		}
	}
}

func watchStatic(ctx context.Context, path string, last []byte, interval time.Duration, sink Sink,
	known map[string]bool, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil || bytes.Equal(data, last) {
			continue
		}
		last = data
		st, err := ParseStatic(data)
		if err != nil {
			log.Error("static config rejected; keeping the last good one", "file", path, "error", err.Error())
			continue
		}
		st.apply(sink, known)
	}
}
