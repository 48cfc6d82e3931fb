// Pod-based endpoint discovery (--endpoints-source=pods): ready pods labelled with the rollout
// and version, for clusters whose EndpointSlices cannot list the pods (e.g. loopback pod IPs).
package source

import (
	"context"
	"log/slog"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"modelrollout.dev/traffic-router/internal/backend"
)

const (
	rolloutLabel = "modelrollout.dev/rollout"
	versionLabel = "modelrollout.dev/version"
	defaultPort  = 8080 // the contract's containerPort when no port is named "http"
)

// StartPodWatch keeps the sink's endpoints equal to the pods of each version, ready or not.
func StartPodWatch(ctx context.Context, rc *rest.Config, namespace, rollout string, sink Sink, log *slog.Logger) error {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = rolloutLabel + "=" + rollout + "," + versionLabel
		}))
	pods := factory.Core().V1().Pods()
	inf := pods.Informer()
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		log.Warn("Pod watch failed; keeping the last known endpoints", "error", err.Error())
	})
	resync := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		version := pod.Labels[versionLabel]
		all, err := pods.Lister().Pods(namespace).List(labels.SelectorFromSet(labels.Set{
			rolloutLabel: rollout, versionLabel: version}))
		if err == nil {
			sink.SetEndpoints(version, ComputePodAddrs(all))
		}
	}
	return startResyncing(ctx, factory, inf, resync)
}

// ComputePodAddrs sorts podIP:port of pods with an IP that have not finished, as the
// EndpointSlice controller would: Ready and not terminating; terminating but still Ready
// (serving); or not Ready. The port is the container port named "http" (else 8080).
func ComputePodAddrs(pods []*corev1.Pod) backend.Addrs {
	var out backend.Addrs
	for _, p := range pods {
		if p.Status.PodIP == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		addr := net.JoinHostPort(p.Status.PodIP, strconv.Itoa(podHTTPPort(p)))
		switch ready := isPodReady(p); {
		case ready && p.DeletionTimestamp == nil:
			out.Ready = append(out.Ready, addr)
		case ready:
			out.Serving = append(out.Serving, addr)
		default:
			out.NotServing = append(out.NotServing, addr)
		}
	}
	return out
}

func isPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podHTTPPort(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "http" {
				return int(port.ContainerPort)
			}
		}
	}
	return defaultPort
}
