package settings

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestEnvFillsUnsetFlagsAndFlagsWin(t *testing.T) {
	s, err := Parse([]string{"--rollout=speech", "--port=9000"}, env(map[string]string{
		"ROUTER_PORT": "7000", "ROUTER_REQUEST_TIMEOUT": "2s", "ROUTER_MAX_REQUEST_BYTES": "1000",
		"ROUTER_NAMESPACE": "ml"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Port != 9000 || s.RequestTimeout != 2*time.Second || s.MaxRequestBytes != 1000 || s.Namespace != "ml" {
		t.Fatalf("got %+v", s)
	}
}

func TestInvalidValuesNameTheFlag(t *testing.T) {
	cases := map[string][]string{
		"--rollout: is required":                              {},
		"--port: expected 1..65535":                           {"--rollout=a", "--port=70000"},
		"--request-timeout: expected":                         {"--rollout=a", "--request-timeout=0s"},
		"--max-concurrency: expected":                         {"--rollout=a", "--max-concurrency=0"},
		"--log-level: expected one of":                        {"--rollout=a", "--log-level=loud"},
		"--rollout: \"A_b\" is not":                           {"--rollout=A_b"},
		"-port":                                               {"--rollout=a", "--port=abc"},
		"--endpoints-source: expected endpointslices or pods": {"--rollout=a", "--endpoints-source=dns"},
		"--shutdown-delay: expected a duration >= 0":          {"--rollout=a", "--shutdown-delay=-1s"},
	}
	for want, args := range cases {
		_, err := Parse(args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: got %v, want %q", args, err, want)
		}
	}
	_, err := Parse([]string{"--rollout=a"}, env(map[string]string{"ROUTER_EJECT_DURATION": "soon"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "ROUTER_EJECT_DURATION (flag --eject-duration)") {
		t.Fatalf("env error must name variable and flag: %v", err)
	}
}

func TestPanicRoutingDefaultsOnAndCanBeTurnedOff(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want bool
	}{
		{[]string{"--rollout=a"}, nil, true},
		{[]string{"--rollout=a", "--panic-routing=false"}, nil, false},
		{[]string{"--rollout=a"}, map[string]string{"ROUTER_PANIC_ROUTING": "false"}, false},
		{[]string{"--rollout=a", "--panic-routing"}, map[string]string{"ROUTER_PANIC_ROUTING": "false"}, true},
	} {
		s, err := Parse(c.args, env(c.env), io.Discard)
		if err != nil || s.PanicRouting != c.want {
			t.Errorf("%v %v: got %v %v, want %v", c.args, c.env, s.PanicRouting, err, c.want)
		}
	}
	_, err := Parse([]string{"--rollout=a"}, env(map[string]string{"ROUTER_PANIC_ROUTING": "sometimes"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "ROUTER_PANIC_ROUTING (flag --panic-routing)") {
		t.Fatalf("got %v", err)
	}
}

func TestClientAndMemoryLimitsHaveDocumentedDefaults(t *testing.T) {
	s, err := Parse([]string{"--rollout=a"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.MaxBufferedBytes != 256<<20 || s.BodyReadTimeout != 30*time.Second || s.ReadHeaderTimeout != 10*time.Second ||
		s.MaxHeaderBytes != 64<<10 || s.MirrorMaxBytes != 64<<20 || s.UpstreamIdleTimeout != 60*time.Second ||
		s.MaxConnections != 4096 || s.FeedbackMaxIDs != 100_000 || s.FeedbackMaxAge != 15*time.Minute ||
		s.FeedbackRate != 1000 || s.FeedbackBurst != 1000 {
		t.Fatalf("defaults changed (update docs/router.md with them): %+v", s)
	}
	s, err = Parse([]string{"--rollout=a"}, env(map[string]string{"ROUTER_MIRROR_MAX_QUEUED_BYTES": "1000",
		"ROUTER_BODY_READ_TIMEOUT": "2s"}), io.Discard)
	if err != nil || s.MirrorMaxBytes != 1000 || s.BodyReadTimeout != 2*time.Second {
		t.Fatalf("env: %+v %v", s, err)
	}
}

func TestLimitsThatCannotWorkTogetherAreRefused(t *testing.T) {
	cases := map[string][]string{
		"--max-buffered-request-bytes: 1000 is below --max-request-bytes=2000": {"--rollout=a", "--max-request-bytes=2000", "--max-buffered-request-bytes=1000"},
		"--body-read-timeout: expected a positive duration":                    {"--rollout=a", "--body-read-timeout=0s"},
		"--read-header-timeout: expected a positive duration":                  {"--rollout=a", "--read-header-timeout=-1s"},
		"--mirror-max-queued-bytes: expected an integer >= 1":                  {"--rollout=a", "--mirror-max-queued-bytes=0"},
		"--max-header-bytes: expected an integer >= 1":                         {"--rollout=a", "--max-header-bytes=0"},
		"--upstream-idle-timeout: expected a positive duration":                {"--rollout=a", "--upstream-idle-timeout=0s"},
		"--max-connections: expected an integer >= 1":                          {"--rollout=a", "--max-connections=0"},
		"--feedback-max-ids: expected an integer >= 1":                         {"--rollout=a", "--feedback-max-ids=0"},
		"--feedback-max-ids: expected at most 10000000":                        {"--rollout=a", "--feedback-max-ids=10000001"},
		"--feedback-max-age: expected a positive duration":                     {"--rollout=a", "--feedback-max-age=0s"},
		"--feedback-rate: expected a number of feedbacks per second > 0":       {"--rollout=a", "--feedback-rate=0"},
		"--feedback-rate: expected a number of feedbacks per second > 0, such": {"--rollout=a", "--feedback-rate=NaN"},
		"--feedback-burst: expected an integer >= 1":                           {"--rollout=a", "--feedback-burst=0"},
	}
	for want, args := range cases {
		_, err := Parse(args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: got %v, want %q", args, err, want)
		}
	}
}

func TestMemoryBoundIsTheSumOfTheBudgets(t *testing.T) {
	s, err := Parse([]string{"--rollout=r"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// 256 MiB bodies + 64 MiB shadow queue + 8 x 1 MiB shadow answers + 4096 x 20 KiB + 64 MiB,
	// + 100,000 answers remembered for feedback x 320 bytes (30.5 MiB)
	if got, want := s.MemoryBound(), int64(256+64+8+80+64)<<20+100_000*320; got != want {
		t.Fatalf("MemoryBound() = %d, want %d (502.5 MiB)", got, want)
	}
	if s.MemoryBound() >= 512<<20 {
		t.Fatalf("MemoryBound() = %d is not below the router pod's 512Mi limit", s.MemoryBound())
	}
	s.MaxBufferedBytes += 1 << 20
	if got := s.MemoryBound(); got != int64(473)<<20+100_000*320 {
		t.Fatalf("one more MiB of body budget: %d", got)
	}
	s.FeedbackMaxIDs = 1
	if got := s.MemoryBound(); got != int64(473)<<20+320 {
		t.Fatalf("one remembered answer: %d", got)
	}
}
