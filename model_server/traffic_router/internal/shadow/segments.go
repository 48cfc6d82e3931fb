// Segment-level agreement: the stretches of speech each prediction reports, matched between
// stable and candidate by time overlap (router_shadow_segment_comparisons_total{result}).
package shadow

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Results of segment comparisons. Each stable segment gets exactly one of Agree, Disagree,
// Missing or Error; each candidate segment left unmatched counts as Extra.
const (
	Missing = "missing"
	Extra   = "extra"
)

// SegmentResults lists every result of the segment counter, in export order.
var SegmentResults = []string{Agree, Disagree, Missing, Extra, Error}

// MinSegmentIoU is the least intersection-over-union of two time spans for them to count as
// the same segment. At 0.5 a segment can match at most one segment of the other answer
// (absent exact ties), and a candidate that splits a stable segment into two halves keeps
// one half as the match; the other half is an extra segment.
const MinSegmentIoU = 0.5

// Segment is one stretch of a clip and the label heard in it.
type Segment struct {
	Start float64
	End   float64
	Label string
}

// rawSegment mirrors the model server's {"start_s","end_s","label","confidence"}; pointers
// tell a missing field from a zero.
type rawSegment struct {
	Start *float64 `json:"start_s"`
	End   *float64 `json:"end_s"`
	Label *string  `json:"label"`
}

// parseSegments reads a JSON list of segments; `where` names the input for the error.
func parseSegments(raw []byte, where string) ([]Segment, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || items == nil {
		return nil, fmt.Errorf("%s: expected a JSON list of {start_s, end_s, label} objects, got %s",
			where, clip(raw))
	}
	out := make([]Segment, 0, len(items))
	for i, item := range items {
		var r rawSegment
		if err := json.Unmarshal(item, &r); err != nil || r.Start == nil || r.End == nil || r.Label == nil {
			return nil, fmt.Errorf("%s[%d]: expected an object with numbers start_s, end_s and a string label, got %s",
				where, i, clip(item))
		}
		if *r.Start < 0 || *r.End < *r.Start {
			return nil, fmt.Errorf("%s[%d]: expected 0 <= start_s <= end_s, got start_s %g, end_s %g",
				where, i, *r.Start, *r.End)
		}
		out = append(out, Segment{Start: *r.Start, End: *r.End, Label: *r.Label})
	}
	return out, nil
}

// clip shortens a raw value for an error message.
func clip(raw []byte) string {
	if len(raw) > 80 {
		return string(raw[:80]) + "…"
	}
	return string(raw)
}

// computeIoU is the intersection over union of two time spans; two identical zero-length
// spans are the same instant (1), otherwise an empty union overlaps nothing (0).
func computeIoU(a, b Segment) float64 {
	inter := min(a.End, b.End) - max(a.Start, b.Start)
	union := max(a.End, b.End) - min(a.Start, b.Start)
	if union <= 0 {
		if a.Start == b.Start {
			return 1
		}
		return 0
	}
	return max(inter, 0) / union
}

// matchSegments pairs stable and candidate segments greedily: of all pairs with IoU >=
// MinSegmentIoU, the one with the largest IoU first (ties: lower stable, then lower
// candidate index), each segment used at most once. It returns, per stable segment, the index
// of its candidate segment or -1, and which candidate segments were used.
func matchSegments(stable, cand []Segment) (match []int, used []bool) {
	type pair struct {
		s, c int
		iou  float64
	}
	var pairs []pair
	for s := range stable {
		for c := range cand {
			if iou := computeIoU(stable[s], cand[c]); iou >= MinSegmentIoU {
				pairs = append(pairs, pair{s, c, iou})
			}
		}
	}
	sort.SliceStable(pairs, func(i, j int) bool { return pairs[i].iou > pairs[j].iou })
	match, used = make([]int, len(stable)), make([]bool, len(cand))
	for i := range match {
		match[i] = -1
	}
	for _, p := range pairs {
		if match[p.s] < 0 && !used[p.c] {
			match[p.s], used[p.c] = p.c, true
		}
	}
	return match, used
}

// countSegments adds the results of one prediction pair to counts. A stable prediction
// without readable segments, or a candidate prediction that reports none, compares nothing.
// Unreadable candidate segments count one error per stable segment (at least one, so a
// broken candidate never goes unseen) and are returned for the log.
func countSegments(stable, cand Prediction, counts map[string]int) error {
	if !stable.HasSegments || stable.SegmentsErr != nil || !cand.HasSegments {
		return nil
	}
	if cand.SegmentsErr != nil {
		counts[Error] += max(1, len(stable.Segments))
		return cand.SegmentsErr
	}
	match, used := matchSegments(stable.Segments, cand.Segments)
	for s, c := range match {
		switch {
		case c < 0:
			counts[Missing]++
		case cand.Segments[c].Label == stable.Segments[s].Label:
			counts[Agree]++
		default:
			counts[Disagree]++
		}
	}
	for _, u := range used {
		if !u {
			counts[Extra]++
		}
	}
	return nil
}

// evaluateSegments compares the segments of every prediction pair (paired by index). A
// prediction without a counterpart is compared with an empty segment list: its stable segments
// are missing, its candidate segments extra (the latter only when stable reports segments at all).
func evaluateSegments(stable, cand []Prediction) (map[string]int, error) {
	counts := map[string]int{}
	var firstErr error
	none := Prediction{HasSegments: isReportingSegments(stable)}
	for i := range max(len(stable), len(cand)) {
		s, c := none, none
		if i < len(stable) {
			s = stable[i]
		}
		if i < len(cand) {
			c = cand[i]
		}
		if err := countSegments(s, c, counts); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return counts, firstErr
}

// countFailedSegments is the segment side of a shadow that gave no usable answer: one error
// per readable stable segment (at least one per prediction that has segments).
func countFailedSegments(stable []Prediction) map[string]int {
	counts := map[string]int{}
	for _, s := range stable {
		if s.HasSegments && s.SegmentsErr == nil {
			counts[Error] += max(1, len(s.Segments))
		}
	}
	return counts
}

// isReportingSegments says whether any stable prediction carries readable segments.
func isReportingSegments(stable []Prediction) bool {
	for _, s := range stable {
		if s.HasSegments && s.SegmentsErr == nil {
			return true
		}
	}
	return false
}
