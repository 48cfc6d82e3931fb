// Kubernetes sources: a dynamic informer on the one ModelRollout (field-selected by name)
// for the split, and an EndpointSlice informer for the endpoints (ready or not) of each version.
package source

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"modelrollout.dev/traffic-router/internal/backend"
	"modelrollout.dev/traffic-router/internal/split"
)

// RolloutGVR is the ModelRollout resource.
var RolloutGVR = schema.GroupVersionResource{Group: "modelrollout.dev", Version: "v1alpha1", Resource: "modelrollouts"}

const serviceNameLabel = "kubernetes.io/service-name"

// FetchRestConfig uses $KUBECONFIG when set (the testbed's pod runner writes one holding the
// pod's service-account token), else the in-cluster service account.
func FetchRestConfig() (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if p := os.Getenv("KUBECONFIG"); p != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", p)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "modelrollout-router"
	rc.QPS, rc.Burst = 20, 40
	return rc, nil
}

// RolloutWatch applies the ModelRollout's status.traffic to the sink.
type RolloutWatch struct {
	Namespace, Rollout, StableVersion string
	Sink                              Sink
	Log                               *slog.Logger
}

// Start runs the informer and, after initialSync without a usable status, the safe default.
func (w *RolloutWatch) Start(ctx context.Context, rc *rest.Config, initialSync time.Duration) error {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, w.Namespace,
		func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + w.Rollout })
	inf := factory.ForResource(RolloutGVR).Informer()
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		w.Log.Warn("ModelRollout watch failed; keeping the last known split", "error", err.Error())
	})
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.onRollout,
		UpdateFunc: func(_, obj any) { w.onRollout(obj) },
		DeleteFunc: func(any) {
			w.Log.Warn("ModelRollout deleted; keeping the last known split", "rollout", w.Rollout)
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	go w.safeDefaultAfter(ctx, initialSync)
	return nil
}

func (w *RolloutWatch) onRollout(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	sp, err := split.ParseRollout(u.Object)
	if err == nil {
		w.Sink.SetSplit(sp)
		return
	}
	cur := w.Sink.Split()
	w.Log.Error("ModelRollout split unusable", "rollout", w.Rollout, "error", err.Error(),
		"keeping_last", cur != nil && cur.Source != "safe-default")
	if cur != nil && cur.Source != "safe-default" {
		return // keep the last good split: a transient bad status must not move traffic
	}
	stable := split.ParseStableVersion(u.Object)
	if stable == "" {
		stable = w.StableVersion
	}
	if stable != "" {
		w.Sink.SetSplit(split.SafeDefault(stable, ""))
	}
}

// safeDefaultAfter sends everything to --stable-version when no status arrived in time.
func (w *RolloutWatch) safeDefaultAfter(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(d):
	}
	if w.Sink.Split() != nil {
		return
	}
	if w.StableVersion == "" {
		w.Log.Error("no ModelRollout status and no --stable-version: not ready until the status can be read",
			"rollout", w.Rollout, "waited", d.String())
		return
	}
	w.Log.Warn("could not read the ModelRollout status in time; routing all traffic to the stable version",
		"rollout", w.Rollout, "stable", w.StableVersion, "waited", d.String())
	w.Sink.SetSplit(split.SafeDefault(w.StableVersion, ""))
}

// StartEndpointWatch keeps the sink's endpoints equal to the endpoints of every
// `<rollout>-<version>` Service's EndpointSlices (port named "http"), ready or not.
func StartEndpointWatch(ctx context.Context, rc *rest.Config, namespace, rollout string, sink Sink, log *slog.Logger) error {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = serviceNameLabel }))
	slices := factory.Discovery().V1().EndpointSlices()
	inf := slices.Informer()
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		log.Warn("EndpointSlice watch failed; keeping the last known endpoints", "error", err.Error())
	})
	prefix := rollout + "-"
	resync := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		es, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || !strings.HasPrefix(es.Labels[serviceNameLabel], prefix) {
			return
		}
		svc := es.Labels[serviceNameLabel]
		all, err := slices.Lister().EndpointSlices(namespace).List(labels.SelectorFromSet(labels.Set{serviceNameLabel: svc}))
		if err != nil {
			return
		}
		sink.SetEndpoints(strings.TrimPrefix(svc, prefix), ComputeAddrs(all))
	}
	return startResyncing(ctx, factory, inf, resync)
}

// ComputeAddrs sorts the endpoints on the port named "http", across all slices of one
// Service, by their conditions: ready (true or unset, per the EndpointSlice API), not ready
// but serving (a terminating pod still passing its probe), or neither (failing its probe).
func ComputeAddrs(all []*discoveryv1.EndpointSlice) backend.Addrs {
	var out backend.Addrs
	for _, es := range all {
		port := sliceHTTPPort(es)
		if port < 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			addr := net.JoinHostPort(ep.Addresses[0], strconv.Itoa(port))
			c := ep.Conditions
			switch {
			case c.Ready == nil || *c.Ready:
				out.Ready = append(out.Ready, addr)
			case c.Serving != nil && *c.Serving:
				out.Serving = append(out.Serving, addr)
			default:
				out.NotServing = append(out.NotServing, addr)
			}
		}
	}
	return out
}

// sliceHTTPPort is the slice's port named "http", or -1 (also for FQDN slices, which the
// router cannot dial without resolving them).
func sliceHTTPPort(es *discoveryv1.EndpointSlice) int {
	port := -1
	if es.AddressType == discoveryv1.AddressTypeFQDN {
		return port
	}
	for _, p := range es.Ports {
		if p.Name != nil && *p.Name == "http" && p.Port != nil {
			port = int(*p.Port)
		}
	}
	return port
}

// startResyncing calls resync for every add, update and delete the informer sees (each call
// recomputes a whole version's endpoints, so the event kind doesn't matter) and starts the factory.
func startResyncing(ctx context.Context, factory interface{ Start(<-chan struct{}) },
	inf cache.SharedIndexInformer, resync func(any)) error {
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: resync, UpdateFunc: func(_, obj any) { resync(obj) }, DeleteFunc: resync,
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	return nil
}
