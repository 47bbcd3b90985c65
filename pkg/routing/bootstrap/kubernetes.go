package bootstrap

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// EndpointSlices is the part of the Kubernetes API this needs: one
// namespace's EndpointSlices. client-go's typed client
// (clientset.DiscoveryV1().EndpointSlices(ns)) satisfies it, and so does the
// small client InClusterClient returns, which links only this one API group
// instead of all of them (the full clientset costs a node ~45 MB of binary and
// ~23 MB of resident memory).
type EndpointSlices interface {
	List(ctx context.Context, opts metav1.ListOptions) (*discoveryv1.EndpointSliceList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// Kubernetes watches the EndpointSlices of the Service that selects the Shoal
// pods, so that a node that joins is found without restarting anyone. It
// lists not-ready endpoints too: a Shoal pod can serve peers before it is
// Ready (readiness waits for containerd), and the DaemonSet's Service should
// set publishNotReadyAddresses anyway. Endpoints that are terminating are
// skipped: they are going away.
//
// The Service account needs get, list and watch on
// discovery.k8s.io/endpointslices in the namespace.
type Kubernetes struct {
	namespace, service, port string
	log                      *slog.Logger
	informer                 cache.SharedIndexInformer
	synced                   atomic.Bool
}

// NewKubernetes prepares the informer on slices (one namespace's
// EndpointSlices); Run starts it.
func NewKubernetes(slices EndpointSlices, namespace, serviceName, port string, log *slog.Logger) *Kubernetes {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	selector := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: serviceName}).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return slices.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return slices.Watch(ctx, o)
		},
	}
	// No periodic resync: the watch delivers every change, and Func reads the
	// cache, never the handlers.
	inf := cache.NewSharedIndexInformer(plainListWatch{lw}, &discoveryv1.EndpointSlice{}, 0, cache.Indexers{})
	return &Kubernetes{namespace: namespace, service: serviceName, port: port, log: log, informer: inf}
}

// Run runs the informer until ctx is done.
func (k *Kubernetes) Run(ctx context.Context) error {
	go k.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), k.informer.HasSynced) {
		return ctx.Err()
	}
	k.synced.Store(true)
	addrs, _ := k.Func()(ctx)
	k.log.Info("kubernetes bootstrap: watching endpoint slices", "namespace", k.namespace,
		"service", k.service, "addresses", len(addrs))
	<-ctx.Done()
	return nil
}

// Func returns the addresses in the informer's cache: instant, no API call.
// Before the first sync it returns nothing, without an error: the router
// polls again shortly.
func (k *Kubernetes) Func() Func {
	return func(context.Context) ([]string, error) {
		if !k.synced.Load() && !k.informer.HasSynced() {
			return nil, nil
		}
		var list []*discoveryv1.EndpointSlice
		for _, obj := range k.informer.GetStore().List() {
			if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
				list = append(list, s)
			}
		}
		return endpointAddrs(list, k.port), nil
	}
}

// endpointAddrs joins every IPv4 and IPv6 endpoint address with port.
func endpointAddrs(list []*discoveryv1.EndpointSlice, port string) []string {
	var out []string
	for _, s := range list {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices name hosts, not pods
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
				continue
			}
			for _, a := range ep.Addresses {
				if net.ParseIP(a) == nil {
					continue
				}
				out = append(out, net.JoinHostPort(a, port))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// plainListWatch keeps the informer on plain list and watch rather than
// streaming lists (WatchList): one Service's slices are small, every API
// server version supports it, and so do client-go's fakes.
type plainListWatch struct{ *cache.ListWatch }

func (plainListWatch) IsWatchListSemanticsUnSupported() bool { return true }
