// Package settings holds the router's one settings object: kebab-case flags, each with a
// ROUTER_* environment variable, validated at startup with messages that name the flag.
package settings

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Settings are the router's tunables; defaults are documented in docs/router.md.
type Settings struct {
	Rollout             string        // ModelRollout name; also the metrics' rollout label
	Namespace           string        // namespace of the ModelRollout and its EndpointSlices
	Host                string        // bind address (the pod IP in a cluster)
	Port                int           // bind port
	StaticConfig        string        // JSON file replacing the watch (split and/or endpoints); empty = watch only
	EndpointsSource     string        // "endpointslices" (default) or "pods" (ready pods by label)
	StableVersion       string        // fallback stable version when the status cannot be read
	InitialSyncTimeout  time.Duration // wait this long for the status before deciding the safe default
	MaxRequestBytes     int64         // larger request bodies get 413
	MaxBufferedBytes    int64         // request body bytes held by all requests together; 503 above
	BodyReadTimeout     time.Duration // the whole body must arrive within this after the headers; 408 after
	ReadHeaderTimeout   time.Duration // the request line and headers must arrive within this (slowloris)
	MaxHeaderBytes      int           // request line plus headers; 431 above
	RequestTimeout      time.Duration // whole upstream exchange; exceeded before headers -> 504
	MaxConcurrency      int           // in-flight requests above this get 503
	MaxConnections      int           // client connections held open at once; more wait to be accepted
	ConnectTimeout      time.Duration // TCP connect timeout to a backend
	EjectDuration       time.Duration // how long an endpoint that failed to connect is skipped
	PanicRouting        bool          // route to not-ready endpoints while a version has no ready one
	MaxIdleConnsPerEP   int           // keep-alive pool size per backend endpoint
	UpstreamIdleTimeout time.Duration // close idle backend connections before the backend does
	MirrorQueue         int           // shadow jobs waiting; beyond this they are dropped
	MirrorMaxBytes      int64         // bytes held by queued and running shadow jobs; beyond this they are dropped
	MirrorWorkers       int           // concurrent shadow requests
	MirrorTimeout       time.Duration // timeout of one shadow request
	MirrorMaxBodyBytes  int64         // larger stable answers are not compared
	ShutdownDelay       time.Duration // keep serving (readiness failing) this long after SIGTERM
	ShutdownGrace       time.Duration // drain time after SIGTERM
	FeedbackMaxIDs      int           // answers remembered for POST /feedback; the oldest go first
	FeedbackMaxAge      time.Duration // an answer older than this takes no feedback (404)
	FeedbackRate        float64       // feedbacks per second admitted on average (token bucket); 429 above
	FeedbackBurst       int           // feedbacks admitted at once (the bucket's size)
	LogLevel            string        // debug|info|warn|error
	AccessLog           bool          // one JSON line per request (costly at high rates)
}

// Memory bounds outside the flags, used by MemoryBound.
const (
	ConnectionBytes = 20 << 10 // what one open client connection costs: a goroutine and its buffers
	RuntimeOverhead = 64 << 20 // Go's own: code, globals (client-go's are large), caches, fragmentation
	// GCPercent replaces Go's default GOGC=100: with the router's small live heap, GC at 100 ran
	// every few MiB of allocation and cost about a quarter of its instructions per request;
	// MemoryBound caps the heap instead (see docs/router.md, Performance).
	GCPercent = 400
	// FeedbackEntryBytes is the most one remembered answer holds (feedback.EntryBytes, a test
	// keeps them equal; this package imports nothing of the router's).
	FeedbackEntryBytes = 320
	MaxFeedbackIDs     = 10_000_000 // --feedback-max-ids' ceiling: 3.2 GB at worst
)

// MemoryBound is what the router may hold at worst with these settings: the request-body and
// shadow budgets, the shadow answers being read, the connections, the answers remembered for
// feedback, and Go's overhead (the sum docs/router.md and docs/security.md give, about 503 MiB
// with the defaults). The router sets it
// as Go's soft memory limit, so a larger GOGC never takes the heap past it.
func (s Settings) MemoryBound() int64 {
	return s.MaxBufferedBytes + s.MirrorMaxBytes + int64(s.MirrorWorkers)*s.MirrorMaxBodyBytes +
		int64(s.MaxConnections)*ConnectionBytes + int64(s.FeedbackMaxIDs)*FeedbackEntryBytes + RuntimeOverhead
}

// EnvName is the environment variable that sets a flag: --max-request-bytes -> ROUTER_MAX_REQUEST_BYTES.
func EnvName(flagName string) string {
	return "ROUTER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func newFlagSet(s *Settings) *flag.FlagSet {
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	fs.StringVar(&s.Rollout, "rollout", "", "ModelRollout name (required)")
	fs.StringVar(&s.Namespace, "namespace", "", "namespace of the ModelRollout (default: the pod's namespace, else \"default\")")
	fs.StringVar(&s.Host, "host", "127.0.0.1", "address to listen on")
	fs.IntVar(&s.Port, "port", 8080, "port to listen on")
	fs.StringVar(&s.StaticConfig, "static-config", "", "JSON file with traffic and/or endpoints, re-read on change (replaces the watch for what it holds)")
	fs.StringVar(&s.EndpointsSource, "endpoints-source", "endpointslices", "where backends come from: endpointslices (of Service <rollout>-<version>) or pods (ready pods labelled modelrollout.dev/rollout and /version)")
	fs.StringVar(&s.StableVersion, "stable-version", "", "version that gets all traffic when the ModelRollout status cannot be read")
	fs.DurationVar(&s.InitialSyncTimeout, "initial-sync-timeout", 5*time.Second, "how long to wait for the status before routing all traffic to --stable-version")
	fs.Int64Var(&s.MaxRequestBytes, "max-request-bytes", 8<<20, "largest request body accepted (413 above)")
	fs.Int64Var(&s.MaxBufferedBytes, "max-buffered-request-bytes", 256<<20, "request body bytes (plus stable answers kept for the shadow comparison) all requests together may hold in memory, being read or in flight; 503 above")
	fs.DurationVar(&s.BodyReadTimeout, "body-read-timeout", 30*time.Second, "time a client has to send the whole request body after its headers (408 after)")
	fs.DurationVar(&s.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has to send the request line and headers (the connection is closed after)")
	fs.IntVar(&s.MaxHeaderBytes, "max-header-bytes", 64<<10, "largest request line plus headers accepted (431 above)")
	fs.DurationVar(&s.RequestTimeout, "request-timeout", 30*time.Second, "per-request upstream timeout (504 when exceeded)")
	fs.IntVar(&s.MaxConcurrency, "max-concurrency", 1024, "requests in flight before new ones get 503")
	fs.IntVar(&s.MaxConnections, "max-connections", 4096, "client connections held open at once (idle keep-alive ones included); more wait in the kernel's accept queue")
	fs.DurationVar(&s.ConnectTimeout, "connect-timeout", time.Second, "TCP connect timeout to a backend endpoint")
	fs.DurationVar(&s.EjectDuration, "eject-duration", 10*time.Second, "how long an endpoint that failed to connect is skipped")
	fs.BoolVar(&s.PanicRouting, "panic-routing", true, "when a version has no ready endpoint, route to its not-ready ones (terminating-but-serving first) instead of answering 503")
	fs.IntVar(&s.MaxIdleConnsPerEP, "max-idle-conns-per-endpoint", 256, "keep-alive connections kept per backend endpoint")
	fs.DurationVar(&s.UpstreamIdleTimeout, "upstream-idle-timeout", 60*time.Second, "idle keep-alive connections to backends are closed after this; keep it below the backends' own keep-alive timeout (KServe: 65s)")
	fs.IntVar(&s.MirrorQueue, "mirror-queue", 256, "shadow requests waiting for a worker; more are dropped and counted")
	fs.Int64Var(&s.MirrorMaxBytes, "mirror-max-queued-bytes", 64<<20, "memory (request plus stable answer bytes) all waiting and running shadow copies may hold; more are dropped and counted")
	fs.IntVar(&s.MirrorWorkers, "mirror-workers", 8, "concurrent shadow requests")
	fs.DurationVar(&s.MirrorTimeout, "mirror-timeout", 10*time.Second, "timeout of one shadow request")
	fs.Int64Var(&s.MirrorMaxBodyBytes, "mirror-max-body-bytes", 1<<20, "stable answers larger than this are not compared")
	fs.DurationVar(&s.ShutdownDelay, "shutdown-delay", 0, "after SIGTERM keep serving this long with /readyz failing, so Service endpoints drop the pod before its listener closes")
	fs.DurationVar(&s.ShutdownGrace, "shutdown-grace", 10*time.Second, "drain time after SIGTERM")
	fs.IntVar(&s.FeedbackMaxIDs, "feedback-max-ids", 100000, "answers remembered by request id for POST /feedback (at most 320 bytes each); the oldest are forgotten first")
	fs.DurationVar(&s.FeedbackMaxAge, "feedback-max-age", 15*time.Minute, "feedback for an answer older than this is refused (404)")
	fs.Float64Var(&s.FeedbackRate, "feedback-rate", 1000, "feedbacks per second admitted on average (a token bucket for the whole router); 429 above")
	fs.IntVar(&s.FeedbackBurst, "feedback-burst", 1000, "feedbacks admitted at once before --feedback-rate applies")
	fs.StringVar(&s.LogLevel, "log-level", "info", "debug|info|warn|error")
	fs.BoolVar(&s.AccessLog, "access-log", false, "log one JSON line per request")
	return fs
}

// Parse reads flags, then ROUTER_* variables for flags not given, then validates.
func Parse(args []string, getenv func(string) string, usage io.Writer) (Settings, error) {
	var s Settings
	fs := newFlagSet(&s)
	fs.SetOutput(usage)
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q: all options are --flags", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v := getenv(EnvName(f.Name))
		if given[f.Name] || v == "" || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("invalid value %q for %s (flag --%s): %v", v, EnvName(f.Name), f.Name, err)
		}
	})
	if envErr != nil {
		return s, envErr
	}
	if s.Namespace == "" {
		s.Namespace = podNamespace()
	}
	return s, s.Validate()
}

func podNamespace() string {
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil || strings.TrimSpace(string(b)) == "" {
		return "default"
	}
	return strings.TrimSpace(string(b))
}

// Validate checks every value and names the flag that is wrong and what is expected.
func (s Settings) Validate() error {
	var errs []error
	bad := func(flagName, format string, a ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flagName, fmt.Sprintf(format, a...)))
	}
	if s.Rollout == "" {
		bad("rollout", "is required: the name of the ModelRollout this router serves")
	} else if !isDNSLabel(s.Rollout) {
		bad("rollout", "%q is not a valid object name (lowercase letters, digits and '-', at most 63)", s.Rollout)
	}
	if s.Port < 1 || s.Port > 65535 {
		bad("port", "expected 1..65535, got %d", s.Port)
	}
	errs = append(errs, s.validateNumbers()...)
	if s.MaxRequestBytes >= 1 && s.MaxBufferedBytes < s.MaxRequestBytes {
		bad("max-buffered-request-bytes", "%d is below --max-request-bytes=%d, so a body of the allowed size "+
			"could never be read; expected at least %d", s.MaxBufferedBytes, s.MaxRequestBytes, s.MaxRequestBytes)
	}
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "expected one of debug|info|warn|error, got %q", s.LogLevel)
	}
	if s.EndpointsSource != "endpointslices" && s.EndpointsSource != "pods" {
		bad("endpoints-source", "expected endpointslices or pods, got %q", s.EndpointsSource)
	}
	if s.StableVersion != "" && !isDNSLabel(s.StableVersion) {
		bad("stable-version", "%q is not a valid version name (lowercase letters, digits and '-')", s.StableVersion)
	}
	return errors.Join(errs...)
}

// validateNumbers checks durations and counts; one error per bad flag, in flag-name order.
func (s Settings) validateNumbers() []error {
	var errs []error
	positiveDur := map[string]time.Duration{
		"initial-sync-timeout": s.InitialSyncTimeout, "request-timeout": s.RequestTimeout,
		"connect-timeout": s.ConnectTimeout, "eject-duration": s.EjectDuration,
		"mirror-timeout": s.MirrorTimeout, "body-read-timeout": s.BodyReadTimeout,
		"read-header-timeout": s.ReadHeaderTimeout, "upstream-idle-timeout": s.UpstreamIdleTimeout,
		"feedback-max-age": s.FeedbackMaxAge,
	}
	for _, name := range sortedKeys(positiveDur) {
		if positiveDur[name] <= 0 {
			errs = append(errs, fmt.Errorf("--%s: expected a positive duration such as 500ms or 5s, got %s", name, positiveDur[name]))
		}
	}
	nonNegDur := map[string]time.Duration{"shutdown-grace": s.ShutdownGrace, "shutdown-delay": s.ShutdownDelay}
	for _, name := range sortedKeys(nonNegDur) {
		if nonNegDur[name] < 0 {
			errs = append(errs, fmt.Errorf("--%s: expected a duration >= 0, got %s", name, nonNegDur[name]))
		}
	}
	positiveInt := map[string]int64{
		"max-request-bytes": s.MaxRequestBytes, "max-concurrency": int64(s.MaxConcurrency),
		"max-idle-conns-per-endpoint": int64(s.MaxIdleConnsPerEP), "mirror-queue": int64(s.MirrorQueue),
		"mirror-workers": int64(s.MirrorWorkers), "mirror-max-body-bytes": s.MirrorMaxBodyBytes,
		"max-buffered-request-bytes": s.MaxBufferedBytes, "mirror-max-queued-bytes": s.MirrorMaxBytes,
		"max-header-bytes": int64(s.MaxHeaderBytes), "max-connections": int64(s.MaxConnections),
		"feedback-max-ids": int64(s.FeedbackMaxIDs), "feedback-burst": int64(s.FeedbackBurst),
	}
	for _, name := range sortedKeys(positiveInt) {
		if positiveInt[name] < 1 {
			errs = append(errs, fmt.Errorf("--%s: expected an integer >= 1, got %d", name, positiveInt[name]))
		}
	}
	if s.FeedbackMaxIDs > MaxFeedbackIDs {
		errs = append(errs, fmt.Errorf("--feedback-max-ids: expected at most %d (%d bytes each at worst), got %d",
			MaxFeedbackIDs, FeedbackEntryBytes, s.FeedbackMaxIDs))
	}
	if !(s.FeedbackRate > 0) || math.IsInf(s.FeedbackRate, 0) {
		errs = append(errs, fmt.Errorf("--feedback-rate: expected a number of feedbacks per second > 0, such as 1000, got %g", s.FeedbackRate))
	}
	return errs
}

func isDNSLabel(v string) bool {
	if len(v) == 0 || len(v) > 63 || v[0] == '-' || v[len(v)-1] == '-' {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare[string])
	return keys
}
