// Package shadow mirrors a share of stable requests to another version, fire-and-forget, and
// compares that version's predictions with the stable answer the user already received.
package shadow

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Result of one comparison (router_shadow_comparisons_total{result}); segment comparisons
// use these too, plus Missing and Extra (segments.go).
const (
	Agree    = "agree"
	Disagree = "disagree"
	Error    = "error"
)

// Prediction is the part of an answer the comparison looks at.
type Prediction struct {
	Label         string
	Confidence    float64
	HasConfidence bool
	Segments      []Segment // empty when HasSegments is false or SegmentsErr is set
	HasSegments   bool      // the answer reports segments for this prediction (possibly none)
	SegmentsErr   error     // the reported segments could not be read; the label still counts
}

// Comparison is what one mirrored request says about the candidate.
type Comparison struct {
	Result   string         // clip level: Agree, Disagree or Error
	Deltas   []float64      // candidate − stable confidence, per prediction pair that has both
	Segments map[string]int // segment level, count per SegmentResults entry; empty if nothing compared
	// SegmentsErr says why some candidate segments were counted as Error (for the log); nil
	// when every candidate segment list could be read.
	SegmentsErr error
}

// ErrStableUnusable means the stable answer had no predictions to compare against; such a
// sample says nothing about the candidate and is not counted.
var ErrStableUnusable = errors.New("stable answer has no comparable predictions")

type v1Answer struct {
	Predictions []json.RawMessage `json:"predictions"`
}

type v2Output struct {
	Name string `json:"name"`
	Data []any  `json:"data"`
}

type v2Answer struct {
	Outputs []v2Output `json:"outputs"`
}

// ParsePredictions reads a KServe v1 ({"predictions":[{label,confidence,segments}]}) or v2
// ({"outputs":[{name:"label"},{name:"confidence"},{name:"segments"}]}) answer. Segments are
// optional; unreadable segments are recorded on the prediction, not returned as an error.
func ParsePredictions(body []byte) ([]Prediction, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, fmt.Errorf("answer is not a JSON object: %v", err)
	}
	if _, ok := probe["predictions"]; ok {
		return parseV1(body)
	}
	if _, ok := probe["outputs"]; ok {
		return parseV2(body)
	}
	return nil, errors.New("answer has neither v1 'predictions' nor v2 'outputs'")
}

func parseV1(body []byte) ([]Prediction, error) {
	var a v1Answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("predictions: %v", err)
	}
	out := make([]Prediction, 0, len(a.Predictions))
	for i, raw := range a.Predictions {
		var p struct {
			Label      *string         `json:"label"`
			Confidence *float64        `json:"confidence"`
			Segments   json.RawMessage `json:"segments"`
		}
		if err := json.Unmarshal(raw, &p); err != nil || p.Label == nil {
			return nil, fmt.Errorf("predictions[%d]: expected an object with a string 'label'", i)
		}
		pr := Prediction{Label: *p.Label}
		if p.Confidence != nil {
			pr.Confidence, pr.HasConfidence = *p.Confidence, true
		}
		if p.Segments != nil && string(p.Segments) != "null" { // null: no segments reported
			pr.HasSegments = true
			pr.Segments, pr.SegmentsErr = parseSegments(p.Segments, fmt.Sprintf("predictions[%d].segments", i))
		}
		out = append(out, pr)
	}
	return out, nil
}

func parseV2(body []byte) ([]Prediction, error) {
	var a v2Answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("outputs: %v", err)
	}
	var labels, confs, segs []any
	for _, o := range a.Outputs {
		switch o.Name {
		case "label":
			labels = o.Data
		case "confidence":
			confs = o.Data
		case "segments":
			segs = o.Data
		}
	}
	if labels == nil {
		return nil, errors.New("outputs: no output named 'label'")
	}
	out := make([]Prediction, len(labels))
	for i, l := range labels {
		s, ok := l.(string)
		if !ok {
			return nil, fmt.Errorf("outputs[label].data[%d]: expected a string, got %v", i, l)
		}
		out[i].Label = s
		if i < len(confs) {
			if f, ok := confs[i].(float64); ok {
				out[i].Confidence, out[i].HasConfidence = f, true
			}
		}
		if i < len(segs) && segs[i] != nil { // null: no segments reported
			out[i].HasSegments = true
			out[i].Segments, out[i].SegmentsErr = parseV2Segments(segs[i], i)
		}
	}
	return out, nil
}

// parseV2Segments reads one element of the segments output: a string holding a JSON list.
func parseV2Segments(v any, i int) ([]Segment, error) {
	where := fmt.Sprintf("outputs[segments].data[%d]", i)
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("%s: expected a string holding a JSON list of segments, got %v", where, v)
	}
	return parseSegments([]byte(s), where)
}

// EvaluateAgreement compares two answers. Clip level: agree iff both hold the same number of
// predictions with equal labels. Deltas are candidate − stable confidence for each pair that
// has both. Segment level: see evaluateSegments. An unusable stable answer returns
// ErrStableUnusable; an unreadable candidate answer returns its error with result Error.
func EvaluateAgreement(stableBody, candidateBody []byte) (Comparison, error) {
	stable, err := ParsePredictions(stableBody)
	if err != nil || len(stable) == 0 {
		return Comparison{}, ErrStableUnusable
	}
	cand, err := ParsePredictions(candidateBody)
	if err != nil {
		return Comparison{Result: Error, Segments: countFailedSegments(stable)}, err
	}
	c := Comparison{Result: Agree}
	if len(cand) != len(stable) {
		c.Result = Disagree
	}
	for i := range min(len(cand), len(stable)) {
		if cand[i].Label != stable[i].Label {
			c.Result = Disagree
		}
		if cand[i].HasConfidence && stable[i].HasConfidence {
			c.Deltas = append(c.Deltas, cand[i].Confidence-stable[i].Confidence)
		}
	}
	c.Segments, c.SegmentsErr = evaluateSegments(stable, cand)
	return c, nil
}

// EvaluateFailedShadow is the comparison for a shadow that gave no answer to compare (failed,
// timed out, non-200): Error at clip level, and an error per stable segment.
func EvaluateFailedShadow(stableBody []byte) Comparison {
	stable, _ := ParsePredictions(stableBody) // unreadable stable: no segments to count
	return Comparison{Result: Error, Segments: countFailedSegments(stable)}
}
