// The feedback body, read strictly: one JSON object with requestId and exactly one of label or
// labels, no other field, no field twice, nothing after it; each error names the field.
package feedback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Body is a parsed feedback: the id and one true label per instance (Single: sent as "label").
type Body struct {
	RequestID string
	Labels    []string
	Single    bool
}

const bodyShape = `expected {"requestId": "<id>", "label": "<true label>"} or {"requestId": "<id>", "labels": ["<label>", ...]}`

// ParseBody reads a feedback body (at most MaxBodyBytes, so the labels are bounded too).
func ParseBody(data []byte) (Body, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Body{}, fmt.Errorf("body: not a JSON object; %s", bodyShape)
	}
	var b Body
	var id, label *string
	var labels []*string
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Body{}, fmt.Errorf("body: not valid JSON (%v); %s", err, bodyShape)
		}
		key, _ := tok.(string) // object keys are always strings
		if seen[key] {
			return Body{}, fmt.Errorf("%s: given twice; expected it once", quoteShort(key))
		}
		seen[key] = true
		switch key {
		case "requestId":
			err = decodeField(dec, key, "a string", &id)
		case "label":
			err = decodeField(dec, key, "a string", &label)
		case "labels":
			err = decodeField(dec, key, "an array of strings", &labels)
		default:
			return Body{}, fmt.Errorf("%s: unknown field; %s", quoteShort(key), bodyShape)
		}
		if err != nil {
			return Body{}, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return Body{}, fmt.Errorf("body: not valid JSON (%v); %s", err, bodyShape)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Body{}, errors.New("body: data after the JSON object; send one object per request")
	}
	switch {
	case id == nil:
		return Body{}, fmt.Errorf("requestId: missing; expected the x-request-id of the answer the label is for")
	case !IsValidRequestID(*id):
		return Body{}, fmt.Errorf("requestId: expected 1 to %d characters of A-Z, a-z, 0-9, '.', '_', ':' or '-' "+
			"(the answer's x-request-id), got %s", MaxRequestIDLen, quoteShort(*id))
	case (label == nil) == (labels == nil):
		return Body{}, fmt.Errorf("label/labels: expected exactly one of them: label for a one-instance answer, " +
			"labels (one per instance, in order) for several")
	case label != nil:
		b.Labels, b.Single = []string{*label}, true
	case len(labels) == 0:
		return Body{}, errors.New("labels: empty; expected one label per instance of the answer, in order")
	default:
		for i, l := range labels {
			if l == nil {
				return Body{}, fmt.Errorf("labels[%d]: expected a string, got null", i)
			}
			b.Labels = append(b.Labels, *l)
		}
	}
	b.RequestID = *id
	return b, nil
}

// decodeField decodes one value into dst (a pointer to a pointer or slice, so null is told
// apart from an empty value), naming the field and the expected type when it does not fit.
func decodeField(dec *json.Decoder, field, want string, dst any) error {
	err := dec.Decode(dst)
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Errorf("%s: expected %s, got %s", field, want, typeErr.Value)
	case err != nil:
		return fmt.Errorf("%s: not valid JSON (%v); %s", field, err, bodyShape)
	}
	if isNull(dst) {
		return fmt.Errorf("%s: expected %s, got null", field, want)
	}
	return nil
}

func isNull(dst any) bool {
	switch d := dst.(type) {
	case **string:
		return *d == nil
	case *[]*string:
		return *d == nil
	}
	return false
}
