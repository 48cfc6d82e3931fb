package main

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"

	"modelrollout.dev/traffic-router/internal/settings"
)

func TestTuneGCSetsGOGCAndTheMemoryBoundUnlessTheEnvironmentDid(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	cfg, err := settings.Parse([]string{"--rollout=r"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))

	tuneGC(cfg, func(string) string { return "" }, log)
	if got := debug.SetGCPercent(100); got != settings.GCPercent {
		t.Fatalf("GOGC %d, want %d", got, settings.GCPercent)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != cfg.MemoryBound() {
		t.Fatalf("memory limit %d, want the budgets' sum %d", got, cfg.MemoryBound())
	}

	// GOGC / GOMEMLIMIT from the environment were applied by the runtime: left alone.
	env := map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"}
	tuneGC(cfg, func(k string) string { return env[k] }, log)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC from the environment overridden: %d", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("GOMEMLIMIT from the environment overridden: %d", got)
	}
}
