// Package shadow mirrors a share of stable requests to another version, fire-and-forget, and
// compares that version's predictions with the stable answer the user already received.
package shadow

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Result of one comparison (router_shadow_comparisons_total{result}).
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

// ParsePredictions reads a KServe v1 ({"predictions":[{label,confidence}]}) or v2
// ({"outputs":[{name:"label"},{name:"confidence"}]}) answer.
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
			Label      *string  `json:"label"`
			Confidence *float64 `json:"confidence"`
		}
		if err := json.Unmarshal(raw, &p); err != nil || p.Label == nil {
			return nil, fmt.Errorf("predictions[%d]: expected an object with a string 'label'", i)
		}
		pr := Prediction{Label: *p.Label}
		if p.Confidence != nil {
			pr.Confidence, pr.HasConfidence = *p.Confidence, true
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
	var labels, confs []any
	for _, o := range a.Outputs {
		switch o.Name {
		case "label":
			labels = o.Data
		case "confidence":
			confs = o.Data
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
	}
	return out, nil
}

// EvaluateAgreement compares two answers: agree iff both hold the same number of predictions
// with equal labels. Deltas are candidate − stable confidence for each pair that has both.
func EvaluateAgreement(stableBody, candidateBody []byte) (result string, deltas []float64, err error) {
	stable, err := ParsePredictions(stableBody)
	if err != nil || len(stable) == 0 {
		return "", nil, ErrStableUnusable
	}
	cand, err := ParsePredictions(candidateBody)
	if err != nil {
		return Error, nil, err
	}
	result = Agree
	if len(cand) != len(stable) {
		result = Disagree
	}
	for i := range min(len(cand), len(stable)) {
		if cand[i].Label != stable[i].Label {
			result = Disagree
		}
		if cand[i].HasConfidence && stable[i].HasConfidence {
			deltas = append(deltas, cand[i].Confidence-stable[i].Confidence)
		}
	}
	return result, deltas, nil
}
