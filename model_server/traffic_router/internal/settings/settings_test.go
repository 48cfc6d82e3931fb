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
