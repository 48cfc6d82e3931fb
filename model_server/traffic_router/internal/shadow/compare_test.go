package shadow

import (
	"errors"
	"math"
	"testing"
)

func TestEvaluateAgreementV1(t *testing.T) {
	stable := []byte(`{"predictions":[{"label":"yes","confidence":0.9},{"label":"no","confidence":0.5}]}`)
	c, err := EvaluateAgreement(stable, []byte(`{"predictions":[{"label":"yes","confidence":0.8},{"label":"no","confidence":0.75}]}`))
	if err != nil || c.Result != Agree || len(c.Deltas) != 2 || math.Abs(c.Deltas[0]+0.1) > 1e-9 || math.Abs(c.Deltas[1]-0.25) > 1e-9 {
		t.Fatalf("got %+v %v", c, err)
	}
	c, _ = EvaluateAgreement(stable, []byte(`{"predictions":[{"label":"yes","confidence":0.9},{"label":"up","confidence":0.5}]}`))
	if c.Result != Disagree {
		t.Fatalf("different label: got %s", c.Result)
	}
	c, _ = EvaluateAgreement(stable, []byte(`{"predictions":[{"label":"yes","confidence":0.9}]}`))
	if c.Result != Disagree {
		t.Fatalf("different count: got %s", c.Result)
	}
}

func TestEvaluateAgreementV2(t *testing.T) {
	stable := []byte(`{"model_name":"m","model_version":"v1","outputs":[{"name":"label","datatype":"BYTES","shape":[1],"data":["go"]},{"name":"confidence","datatype":"FP32","shape":[1],"data":[0.7]}]}`)
	cand := []byte(`{"model_name":"m","model_version":"v2","outputs":[{"name":"confidence","datatype":"FP32","shape":[1],"data":[0.9]},{"name":"label","datatype":"BYTES","shape":[1],"data":["go"]}]}`)
	c, err := EvaluateAgreement(stable, cand)
	if err != nil || c.Result != Agree || len(c.Deltas) != 1 || math.Abs(c.Deltas[0]-0.2) > 1e-6 {
		t.Fatalf("got %+v %v", c, err)
	}
	bad := []byte(`{"model_name":"m","model_version":"v2","outputs":[{"name":"label","datatype":"BYTES","shape":[1],"data":["stop"]}]}`)
	if c, _ := EvaluateAgreement(stable, bad); c.Result != Disagree {
		t.Fatalf("got %s", c.Result)
	}
}

func TestEvaluateAgreementErrors(t *testing.T) {
	stable := []byte(`{"predictions":[{"label":"yes","confidence":0.9}]}`)
	for _, cand := range []string{`not json`, `{"error":"boom"}`, `{"predictions":[{"confidence":1}]}`, `{"outputs":[{"name":"x","data":[]}]}`} {
		c, err := EvaluateAgreement(stable, []byte(cand))
		if c.Result != Error || err == nil {
			t.Errorf("candidate %s: got %s %v, want error", cand, c.Result, err)
		}
	}
	if _, err := EvaluateAgreement([]byte(`{"error":"x"}`), stable); !errors.Is(err, ErrStableUnusable) {
		t.Fatalf("unusable stable answer must not count against the candidate: %v", err)
	}
}
