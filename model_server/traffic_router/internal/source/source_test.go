package source

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"modelrollout.dev/traffic-router/internal/backend"
)

func ptr[T any](v T) *T { return &v }

func TestComputeAddrs(t *testing.T) {
	http8080 := []discoveryv1.EndpointPort{{Name: ptr("metrics"), Port: ptr(int32(9090))}, {Name: ptr("http"), Port: ptr(int32(8080))}}
	ep := func(addr string, ready, serving, terminating *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr},
			Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}}
	}
	yes, no := ptr(true), ptr(false)
	slice := func(eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4, Ports: http8080, Endpoints: eps}
	}
	cases := []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		want   backend.Addrs
	}{
		{"ready true and unset are ready", []*discoveryv1.EndpointSlice{slice(ep("10.0.0.1", yes, yes, no), ep("10.0.0.2", nil, nil, nil))},
			backend.Addrs{Ready: []string{"10.0.0.1:8080", "10.0.0.2:8080"}}},
		{"failing its probe: not ready, not serving", []*discoveryv1.EndpointSlice{slice(ep("10.0.0.1", yes, yes, no), ep("10.0.0.3", no, no, no))},
			backend.Addrs{Ready: []string{"10.0.0.1:8080"}, NotServing: []string{"10.0.0.3:8080"}}},
		{"terminating but serving, terminating and failing, serving unset",
			[]*discoveryv1.EndpointSlice{slice(ep("10.0.0.4", no, yes, yes), ep("10.0.0.5", no, no, yes), ep("10.0.0.6", no, nil, nil))},
			backend.Addrs{Serving: []string{"10.0.0.4:8080"}, NotServing: []string{"10.0.0.5:8080", "10.0.0.6:8080"}}},
		{"several slices, each with its own port", []*discoveryv1.EndpointSlice{slice(ep("10.0.0.1", no, no, no)), {
			AddressType: discoveryv1.AddressTypeIPv6, Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(9000))}},
			Endpoints: []discoveryv1.Endpoint{ep("fd00::7", yes, yes, no)}}},
			backend.Addrs{Ready: []string{"[fd00::7]:9000"}, NotServing: []string{"10.0.0.1:8080"}}},
		{"no http port, FQDN slices and endpoints without addresses are skipped", []*discoveryv1.EndpointSlice{
			{AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptr("grpc"), Port: ptr(int32(9000))}},
				Endpoints: []discoveryv1.Endpoint{ep("10.0.0.8", yes, yes, no)}},
			{AddressType: discoveryv1.AddressTypeFQDN, Ports: http8080, Endpoints: []discoveryv1.Endpoint{ep("m.example", no, yes, yes)}},
			slice(discoveryv1.Endpoint{Conditions: discoveryv1.EndpointConditions{Ready: no}})},
			backend.Addrs{}},
	}
	for _, c := range cases {
		if got := ComputeAddrs(c.slices); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v want %+v", c.name, got, c.want)
		}
	}
}

func TestParseStatic(t *testing.T) {
	st, err := ParseStatic([]byte(`{"traffic":{"stable":{"version":"v1","weight":80},"candidate":{"version":"v2","weight":20}},
		"stickyHeader":"x-user-id","endpoints":{"v1":["127.0.0.1:1"],"v2":[]}}`))
	if err != nil || st.Split == nil || st.Split.StickyHeader != "x-user-id" || st.Split.CandidateWeight() != 20 || !st.HasEndpoints {
		t.Fatalf("%+v %v", st, err)
	}
	st, err = ParseStatic([]byte(`{"endpoints":{"v1":["127.0.0.1:1"]},"notReadyEndpoints":{"v1":["127.0.0.1:2"],"v2":["127.0.0.1:3"]}}`))
	want := map[string]backend.Addrs{"v1": {Ready: []string{"127.0.0.1:1"}, NotServing: []string{"127.0.0.1:2"}},
		"v2": {NotServing: []string{"127.0.0.1:3"}}}
	if err != nil || !st.HasEndpoints || !reflect.DeepEqual(st.Endpoints, want) {
		t.Fatalf("notReadyEndpoints: %+v %v", st, err)
	}
	if st, _ := ParseStatic([]byte(`{"notReadyEndpoints":{}}`)); !st.HasEndpoints {
		t.Fatal("notReadyEndpoints alone makes the file the endpoint source")
	}
	for in, want := range map[string]string{
		`{"trafic":{}}`:                                       "trafic: unknown field",
		`{"notReadyEndpoints":{"v1":[""]}}`:                   "notReadyEndpoints.v1[0]",
		`{"traffic":{"stable":{"version":"v1","weight":80}}}`: "traffic: stable.weight + candidate.weight must be 100",
		`{"endpoints":{"v1":"127.0.0.1:1"}}`:                  "endpoints.v1: expected a list",
		`{"endpoints":{"v1":[1]}}`:                            "endpoints.v1[0]",
	} {
		if _, err := ParseStatic([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v want %q", in, err, want)
		}
	}
}

func TestComputePodAddrs(t *testing.T) {
	ready := corev1.PodStatus{PodIP: "127.1.0.5", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	notReady := corev1.PodStatus{PodIP: "127.1.0.6", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}}
	named := corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}, {Name: "http", ContainerPort: 9000}}}}}
	now := metav1.Now()
	pods := []*corev1.Pod{
		{Spec: named, Status: ready},
		{Status: notReady},
		{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: ready}, // terminating, still Ready: serving
		{Status: corev1.PodStatus{PodIP: "127.1.0.7", Conditions: ready.Conditions}},
		{Status: corev1.PodStatus{Conditions: ready.Conditions}},                   // no IP yet
		{Status: corev1.PodStatus{PodIP: "127.1.0.8", Phase: corev1.PodSucceeded}}, // finished: not an endpoint
	}
	got := ComputePodAddrs(pods)
	want := backend.Addrs{Ready: []string{"127.1.0.5:9000", "127.1.0.7:8080"}, Serving: []string{"127.1.0.5:8080"},
		NotServing: []string{"127.1.0.6:8080"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
}
