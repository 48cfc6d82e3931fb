package shadow

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"
)

// Three words in one recording, as the model server reports a long clip.
var threeWords = []Segment{{0.10, 0.60, "yes"}, {1.20, 1.70, "no"}, {2.50, 3.00, "up"}}

func segmentDicts(segs []Segment) []map[string]any {
	out := make([]map[string]any, len(segs))
	for i, s := range segs {
		out[i] = map[string]any{"start_s": s.Start, "end_s": s.End, "label": s.Label, "confidence": 0.9}
	}
	return out
}

func topLabel(segs []Segment) string {
	if len(segs) == 0 {
		return "_silence_"
	}
	return segs[0].Label
}

// v1Body is a KServe v1 answer with one prediction per segment list.
func v1Body(t *testing.T, preds ...[]Segment) []byte {
	t.Helper()
	var ps []map[string]any
	for _, segs := range preds {
		ps = append(ps, map[string]any{"label": topLabel(segs), "confidence": 0.9, "segments": segmentDicts(segs)})
	}
	b, err := json.Marshal(map[string]any{"predictions": ps})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v2Body is an Open Inference Protocol answer: label, confidence and segments (JSON strings).
func v2Body(t *testing.T, preds ...[]Segment) []byte {
	t.Helper()
	var labels, segs []string
	var confs []float64
	for _, p := range preds {
		b, err := json.Marshal(segmentDicts(p))
		if err != nil {
			t.Fatal(err)
		}
		labels, confs, segs = append(labels, topLabel(p)), append(confs, 0.9), append(segs, string(b))
	}
	b, err := json.Marshal(map[string]any{"model_name": "m", "outputs": []map[string]any{
		{"name": "label", "datatype": "BYTES", "shape": []int{len(preds)}, "data": labels},
		{"name": "confidence", "datatype": "FP32", "shape": []int{len(preds)}, "data": confs},
		{"name": "segments", "datatype": "BYTES", "shape": []int{len(preds)}, "data": segs}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func replaced(segs []Segment, i int, s Segment) []Segment {
	out := append([]Segment(nil), segs...)
	out[i] = s
	return out
}

func TestSegmentAgreement(t *testing.T) {
	shifted := []Segment{{0.12, 0.58, "yes"}, {1.25, 1.72, "no"}, {2.45, 2.95, "up"}} // every IoU > 0.8
	cases := []struct {
		name   string
		stable []byte
		cand   []byte
		want   map[string]int
	}{
		{"v1 three segments agree", v1Body(t, threeWords), v1Body(t, shifted), map[string]int{Agree: 3}},
		{"v2 three segments agree", v2Body(t, threeWords), v2Body(t, shifted), map[string]int{Agree: 3}},
		{"v1 stable, v2 candidate", v1Body(t, threeWords), v2Body(t, threeWords), map[string]int{Agree: 3}},
		{"label differs in one of three (v1)", v1Body(t, threeWords),
			v1Body(t, replaced(threeWords, 1, Segment{1.20, 1.70, "go"})), map[string]int{Agree: 2, Disagree: 1}},
		{"label differs in one of three (v2)", v2Body(t, threeWords),
			v2Body(t, replaced(threeWords, 2, Segment{2.50, 3.00, "down"})), map[string]int{Agree: 2, Disagree: 1}},
		{"candidate misses a segment", v1Body(t, threeWords),
			v1Body(t, []Segment{threeWords[0], threeWords[2]}), map[string]int{Agree: 2, Missing: 1}},
		{"candidate segment too far off to match", v1Body(t, threeWords),
			v1Body(t, replaced(threeWords, 1, Segment{1.50, 2.00, "no"})), map[string]int{Agree: 2, Missing: 1, Extra: 1}},
		{"candidate splits a segment in two: one half matches", v1Body(t, []Segment{{0, 1.0, "yes"}}),
			v1Body(t, []Segment{{0, 0.55, "yes"}, {0.55, 1.0, "yes"}}), map[string]int{Agree: 1, Extra: 1}},
		{"candidate splits a segment in three: none matches", v1Body(t, []Segment{{0, 0.9, "yes"}}),
			v1Body(t, []Segment{{0, 0.3, "yes"}, {0.3, 0.6, "yes"}, {0.6, 0.9, "yes"}}), map[string]int{Missing: 1, Extra: 3}},
		{"candidate merges two segments: the larger overlap matches", v1Body(t, []Segment{{0, 0.6, "yes"}, {0.7, 1.0, "no"}}),
			v1Body(t, []Segment{{0, 1.0, "yes"}}), map[string]int{Agree: 1, Missing: 1}},
		{"a candidate segment matches one stable segment only", v1Body(t, []Segment{{0, 1.0, "a"}, {0.2, 1.0, "b"}}),
			v1Body(t, []Segment{{0.1, 1.0, "b"}}), map[string]int{Disagree: 1, Missing: 1}},
		{"single-segment answers count one segment each", v1Body(t, threeWords[:1], threeWords[1:2]),
			v1Body(t, threeWords[:1], []Segment{{1.2, 1.7, "go"}}), map[string]int{Agree: 1, Disagree: 1}},
		{"silence on both sides compares nothing", v1Body(t, nil), v1Body(t, nil), map[string]int{}},
		{"candidate hears a word in silence", v2Body(t, nil), v2Body(t, threeWords[:1]), map[string]int{Extra: 1}},
		{"candidate drops a prediction: its segments are missing", v1Body(t, threeWords[:1], threeWords[1:]),
			v1Body(t, threeWords[:1]), map[string]int{Agree: 1, Missing: 2}},
		{"candidate adds a prediction: its segments are extra", v1Body(t, threeWords[:1]),
			v1Body(t, threeWords[:1], threeWords[1:]), map[string]int{Agree: 1, Extra: 2}},
		{"stable without segments", []byte(`{"predictions":[{"label":"yes","confidence":0.9}]}`),
			v1Body(t, threeWords), map[string]int{}},
		{"stable without segments, candidate adds a prediction", []byte(`{"predictions":[{"label":"yes"}]}`),
			v1Body(t, threeWords[:1], threeWords[1:]), map[string]int{}},
		{"stable segments null", []byte(`{"predictions":[{"label":"yes","segments":null}]}`),
			v1Body(t, threeWords), map[string]int{}},
		{"v2 stable without a segments output",
			[]byte(`{"outputs":[{"name":"label","data":["yes"]},{"name":"confidence","data":[0.9]}]}`),
			v2Body(t, threeWords), map[string]int{}},
		{"malformed stable segments are not counted",
			[]byte(`{"predictions":[{"label":"yes","segments":[{"start_s":1,"end_s":0.5,"label":"yes"}]}]}`),
			v1Body(t, threeWords), map[string]int{}},
		{"candidate without segments", v1Body(t, threeWords),
			[]byte(`{"predictions":[{"label":"yes","confidence":0.9}]}`), map[string]int{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := EvaluateAgreement(tc.stable, tc.cand)
			if err != nil || c.SegmentsErr != nil {
				t.Fatalf("unexpected errors: %v / %v", err, c.SegmentsErr)
			}
			if !maps.Equal(c.Segments, tc.want) {
				t.Fatalf("segments: got %v, want %v", c.Segments, tc.want)
			}
		})
	}
}

func TestMalformedCandidateSegmentsAreErrors(t *testing.T) {
	cases := []struct {
		name, cand, msg string
	}{
		{"v1 not a list", `{"predictions":[{"label":"yes","segments":"yes@0.1"}]}`,
			`predictions[0].segments: expected a JSON list of {start_s, end_s, label} objects, got "yes@0.1"`},
		{"v1 no label", `{"predictions":[{"label":"yes","segments":[{"start_s":0.1,"end_s":0.6}]}]}`,
			`predictions[0].segments[0]: expected an object with numbers start_s, end_s and a string label`},
		{"v1 end before start", `{"predictions":[{"label":"yes","segments":[{"start_s":0.1,"end_s":0.6,"label":"yes"},{"start_s":2,"end_s":1,"label":"no"}]}]}`,
			`predictions[0].segments[1]: expected 0 <= start_s <= end_s, got start_s 2, end_s 1`},
		{"v2 element not JSON", `{"outputs":[{"name":"label","data":["yes"]},{"name":"segments","data":["[{start"]}]}`,
			`outputs[segments].data[0]: expected a JSON list of {start_s, end_s, label} objects, got [{start`},
		{"v2 element not a string", `{"outputs":[{"name":"label","data":["yes"]},{"name":"segments","data":[[{"start_s":0,"end_s":1,"label":"yes"}]]}]}`,
			`outputs[segments].data[0]: expected a string holding a JSON list of segments`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := EvaluateAgreement(v1Body(t, threeWords), []byte(tc.cand))
			if err != nil {
				t.Fatalf("the clip-level comparison must still work: %v", err)
			}
			if c.Result != Agree {
				t.Errorf("clip level: got %s, want agree (labels match)", c.Result)
			}
			if want := map[string]int{Error: 3}; !maps.Equal(c.Segments, want) {
				t.Errorf("segments: got %v, want %v (one error per stable segment)", c.Segments, want)
			}
			if c.SegmentsErr == nil || !strings.Contains(c.SegmentsErr.Error(), tc.msg) {
				t.Errorf("message: got %v, want it to contain %q", c.SegmentsErr, tc.msg)
			}
		})
	}
	// A silent stable clip has no segment to hold the error against; it still counts once.
	c, _ := EvaluateAgreement(v1Body(t, nil), []byte(`{"predictions":[{"label":"yes","segments":{}}]}`))
	if want := map[string]int{Error: 1}; !maps.Equal(c.Segments, want) {
		t.Errorf("silent stable: got %v, want %v", c.Segments, want)
	}
}

func TestFailedShadowCountsAnErrorPerStableSegment(t *testing.T) {
	stable := v2Body(t, threeWords, threeWords[:1], nil)
	want := map[string]int{Error: 3 + 1 + 1}
	if c := EvaluateFailedShadow(stable); c.Result != Error || !maps.Equal(c.Segments, want) {
		t.Fatalf("failed shadow: got %+v, want result error and %v", c, want)
	}
	c, err := EvaluateAgreement(stable, []byte(`{"error":"boom"}`))
	if err == nil || c.Result != Error || !maps.Equal(c.Segments, want) {
		t.Fatalf("unreadable answer: got %+v %v, want result error and %v", c, err, want)
	}
	if c := EvaluateFailedShadow([]byte(`{"predictions":[{"label":"yes"}]}`)); len(c.Segments) != 0 {
		t.Fatalf("stable without segments: got %v, want nothing counted", c.Segments)
	}
}

func TestComputeIoU(t *testing.T) {
	cases := []struct {
		a, b Segment
		want float64
	}{
		{Segment{0, 1, ""}, Segment{0, 1, ""}, 1},
		{Segment{0, 1, ""}, Segment{0.5, 1.5, ""}, 0.5 / 1.5},
		{Segment{0, 1, ""}, Segment{0, 0.5, ""}, 0.5},
		{Segment{0, 1, ""}, Segment{2, 3, ""}, 0},
		{Segment{0.5, 0.5, ""}, Segment{0.5, 0.5, ""}, 1},
		{Segment{0.5, 0.5, ""}, Segment{0.7, 0.7, ""}, 0},
	}
	for _, tc := range cases {
		if got := computeIoU(tc.a, tc.b); got != tc.want {
			t.Errorf("IoU(%v, %v) = %g, want %g", tc.a, tc.b, got, tc.want)
		}
	}
}
