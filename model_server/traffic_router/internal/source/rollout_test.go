package source

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/split"
)

type fakeSink struct{ cur *split.Split }

func (f *fakeSink) SetSplit(s split.Split)             { f.cur = &s }
func (f *fakeSink) SetEndpoints(string, backend.Addrs) {}
func (f *fakeSink) Split() *split.Split                { return f.cur }

func rollout(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

func newWatch(sink *fakeSink, stable string) *RolloutWatch {
	return &RolloutWatch{Rollout: "speech", StableVersion: stable, Sink: sink,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil))}
}

func TestMalformedStatusKeepsTheLastGoodSplit(t *testing.T) {
	sink := &fakeSink{}
	w := newWatch(sink, "v0")
	w.onRollout(rollout(t, `{"status":{"traffic":{"stable":{"version":"v1","weight":80},"candidate":{"version":"v2","weight":20}}}}`))
	if sink.cur == nil || sink.cur.CandidateWeight() != 20 || sink.cur.Source != "status" {
		t.Fatalf("good status not applied: %+v", sink.cur)
	}
	w.onRollout(rollout(t, `{"status":{"traffic":{"stable":{"version":"v1","weight":80},"candidate":{"version":"v2","weight":30}}}}`))
	if sink.cur.CandidateWeight() != 20 {
		t.Fatalf("a split summing to 110 replaced the last good one: %+v", sink.cur)
	}
}

func TestUnusableStatusBeforeAnySplitFallsBackToStable(t *testing.T) {
	sink := &fakeSink{}
	w := newWatch(sink, "v0")
	// candidate weight is garbage, but the stable version is readable: everything to it.
	w.onRollout(rollout(t, `{"status":{"traffic":{"stable":{"version":"v1","weight":90},"candidate":{"version":"v2","weight":"ten"}}}}`))
	if sink.cur == nil || sink.cur.Stable.Version != "v1" || sink.cur.CandidateWeight() != 0 || sink.cur.Source != "safe-default" {
		t.Fatalf("got %+v", sink.cur)
	}
	// No traffic at all: --stable-version.
	sink.cur = nil
	w.onRollout(rollout(t, `{"status":{}}`))
	if sink.cur == nil || sink.cur.Stable.Version != "v0" || sink.cur.Stable.Weight != 100 {
		t.Fatalf("got %+v", sink.cur)
	}
	// A good status replaces the safe default.
	w.onRollout(rollout(t, `{"status":{"traffic":{"stable":{"version":"v1","weight":50},"candidate":{"version":"v2","weight":50}}}}`))
	if sink.cur.Source != "status" || sink.cur.CandidateWeight() != 50 {
		t.Fatalf("got %+v", sink.cur)
	}
}

func TestNoStableVersionAnywhereStaysUnset(t *testing.T) {
	sink := &fakeSink{}
	newWatch(sink, "").onRollout(rollout(t, `{"status":{}}`))
	if sink.cur != nil {
		t.Fatalf("guessed a split: %+v", sink.cur)
	}
}
