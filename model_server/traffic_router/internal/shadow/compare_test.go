package shadow

import (
	"errors"
	"math"
	"testing"
)

func TestEvaluateAgreementV1(t *testing.T) {
	stable := []byte(`{"predictions":[{"label":"yes","confidence":0.9},{"label":"no","confidence":0.5}]}`)
	res, deltas, err := EvaluateAgreement(stable, []byte(`{"predictions":[{"label":"yes","confidence":0.8},{"label":"no","confidence":0.75}]}`))
	if err != nil || res != Agree || len(deltas) != 2 || math.Abs(deltas[0]+0.1) > 1e-9 || math.Abs(deltas[1]-0.25) > 1e-9 {
		t.Fatalf("got %s %v %v", res, deltas, err)
	}
	res, _, _ = EvaluateAgreement(stable, []byte(`{"predictions":[{"label":"yes","confidence":0.9},{"label":"up","confidence":0.5}]}`))
	if res != Disagree {
		t.Fatalf("different label: got %s", res)
	}
	res, _, _ = EvaluateAgreement(stable, []byte(`{"predictions":[{"label":"yes","confidence":0.9}]}`))
	if res != Disagree {
		t.Fatalf("different count: got %s", res)
	}
}

func TestEvaluateAgreementV2(t *testing.T) {
	stable := []byte(`{"model_name":"m","model_version":"v1","outputs":[{"name":"label","datatype":"BYTES","shape":[1],"data":["go"]},{"name":"confidence","datatype":"FP32","shape":[1],"data":[0.7]}]}`)
	cand := []byte(`{"model_name":"m","model_version":"v2","outputs":[{"name":"confidence","datatype":"FP32","shape":[1],"data":[0.9]},{"name":"label","datatype":"BYTES","shape":[1],"data":["go"]}]}`)
	res, deltas, err := EvaluateAgreement(stable, cand)
	if err != nil || res != Agree || len(deltas) != 1 || math.Abs(deltas[0]-0.2) > 1e-6 {
		t.Fatalf("got %s %v %v", res, deltas, err)
	}
	bad := []byte(`{"model_name":"m","model_version":"v2","outputs":[{"name":"label","datatype":"BYTES","shape":[1],"data":["stop"]}]}`)
	if res, _, _ := EvaluateAgreement(stable, bad); res != Disagree {
		t.Fatalf("got %s", res)
	}
}

func TestEvaluateAgreementErrors(t *testing.T) {
	stable := []byte(`{"predictions":[{"label":"yes","confidence":0.9}]}`)
	for _, cand := range []string{`not json`, `{"error":"boom"}`, `{"predictions":[{"confidence":1}]}`, `{"outputs":[{"name":"x","data":[]}]}`} {
		res, _, err := EvaluateAgreement(stable, []byte(cand))
		if res != Error || err == nil {
			t.Errorf("candidate %s: got %s %v, want error", cand, res, err)
		}
	}
	if _, _, err := EvaluateAgreement([]byte(`{"error":"x"}`), stable); !errors.Is(err, ErrStableUnusable) {
		t.Fatalf("unusable stable answer must not count against the candidate: %v", err)
	}
}
