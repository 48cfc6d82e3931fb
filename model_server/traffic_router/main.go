// Command router is ModelRollout's built-in traffic router: it splits (and mirrors) KServe
// inference requests between a model's stable and candidate versions. See docs/router.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"modelrollout.dev/traffic-router/internal/metrics"
	"modelrollout.dev/traffic-router/internal/proxy"
	"modelrollout.dev/traffic-router/internal/settings"
	"modelrollout.dev/traffic-router/internal/source"
)

func main() {
	cfg, err := settings.Parse(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "router: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	log := newLogger(cfg.LogLevel)
	tuneGC(cfg, os.Getenv, log)
	if err := run(cfg, log); err != nil {
		log.Error("router stopped", "error", err.Error())
		os.Exit(1)
	}
}

func newLogger(level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	slog.SetDefault(log)
	klog.SetSlogLogger(log) // client-go's retries and errors become JSON lines too
	return log
}

// tuneGC trades heap for CPU within the router's memory bound: GOGC=settings.GCPercent, and a
// soft memory limit at settings.MemoryBound so the heap never grows past what the budgets allow.
// GOGC or GOMEMLIMIT set in the environment win (the runtime has already applied them).
func tuneGC(cfg settings.Settings, getenv func(string) string, log *slog.Logger) {
	gogc, limit := getenv("GOGC"), getenv("GOMEMLIMIT")
	if gogc == "" {
		debug.SetGCPercent(settings.GCPercent)
		gogc = strconv.Itoa(settings.GCPercent)
	}
	if limit == "" {
		debug.SetMemoryLimit(cfg.MemoryBound())
		limit = strconv.FormatInt(cfg.MemoryBound(), 10)
	}
	log.Debug("garbage collector", "gogc", gogc, "memory_limit", limit)
}

func run(cfg settings.Settings, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	bg, cancelBG := context.WithCancel(context.Background())
	defer cancelBG()
	m := metrics.New(cfg.Rollout)
	router := proxy.New(bg, cfg, m, log)
	if err := startSources(bg, cfg, router, log); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("--host/--port: cannot listen on %s:%d: %v", cfg.Host, cfg.Port, err)
	}
	ln = proxy.LimitConnections(ln, cfg)
	srv := proxy.NewServer(cfg, router)
	log.Info("router listening", "address", ln.Addr().String(), "rollout", cfg.Rollout,
		"namespace", cfg.Namespace, "static_config", cfg.StaticConfig)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Fail readiness first and keep serving while endpoints catch up; then close the listener
	// and let in-flight requests finish.
	router.Drain()
	log.Info("shutting down", "delay", cfg.ShutdownDelay.String(), "grace", cfg.ShutdownGrace.String())
	time.Sleep(cfg.ShutdownDelay)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	return srv.Shutdown(sctx)
}

// startSources wires the static file and/or the Kubernetes watches: whatever the static file
// provides replaces the corresponding watch.
func startSources(ctx context.Context, cfg settings.Settings, router *proxy.Router, log *slog.Logger) error {
	var st source.Static
	if cfg.StaticConfig != "" {
		var err error
		if st, err = source.StartStatic(ctx, cfg.StaticConfig, 200*time.Millisecond, router, log); err != nil {
			return err
		}
	}
	if st.Split != nil && st.HasEndpoints {
		return nil
	}
	rc, err := source.FetchRestConfig()
	if err != nil {
		return fmt.Errorf("no Kubernetes credentials (set KUBECONFIG or run in a pod): %v", err)
	}
	if st.Split == nil {
		w := &source.RolloutWatch{Namespace: cfg.Namespace, Rollout: cfg.Rollout,
			StableVersion: cfg.StableVersion, Sink: router, Log: log}
		if err := w.Start(ctx, rc, cfg.InitialSyncTimeout); err != nil {
			return err
		}
	}
	switch {
	case st.HasEndpoints:
		return nil
	case cfg.EndpointsSource == "pods":
		return source.StartPodWatch(ctx, rc, cfg.Namespace, cfg.Rollout, router, log)
	default:
		return source.StartEndpointWatch(ctx, rc, cfg.Namespace, cfg.Rollout, router, log)
	}
}
