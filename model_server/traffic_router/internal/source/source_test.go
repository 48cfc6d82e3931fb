package source

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func TestComputeReadyAddrs(t *testing.T) {
	slices := []*discoveryv1.EndpointSlice{{
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("metrics"), Port: ptr(int32(9090))}, {Name: ptr("http"), Port: ptr(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"127.0.1.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			{Addresses: []string{"127.0.1.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
			{Addresses: []string{"127.0.1.3"}}, // ready unset means ready
		},
	}, {
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("grpc"), Port: ptr(int32(9000))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"127.0.1.4"}}},
	}}
	got := ComputeReadyAddrs(slices)
	if !reflect.DeepEqual(got, []string{"127.0.1.1:8080", "127.0.1.3:8080"}) {
		t.Fatalf("got %v", got)
	}
}

func TestParseStatic(t *testing.T) {
	st, err := ParseStatic([]byte(`{"traffic":{"stable":{"version":"v1","weight":80},"candidate":{"version":"v2","weight":20}},
		"stickyHeader":"x-user-id","endpoints":{"v1":["127.0.0.1:1"],"v2":[]}}`))
	if err != nil || st.Split == nil || st.Split.StickyHeader != "x-user-id" || st.Split.CandidateWeight() != 20 || !st.HasEndpoints {
		t.Fatalf("%+v %v", st, err)
	}
	for in, want := range map[string]string{
		`{"trafic":{}}`: "trafic: unknown field",
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
		{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: ready},
		{Status: corev1.PodStatus{PodIP: "127.1.0.7", Conditions: ready.Conditions}},
		{Status: corev1.PodStatus{Conditions: ready.Conditions}}, // no IP yet
	}
	got := ComputePodAddrs(pods)
	if !reflect.DeepEqual(got, []string{"127.1.0.5:9000", "127.1.0.7:8080"}) {
		t.Fatalf("got %v", got)
	}
}
