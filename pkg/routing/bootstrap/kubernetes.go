package bootstrap

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listers "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

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
	factory                  informers.SharedInformerFactory
	informer                 cache.SharedIndexInformer
	lister                   listers.EndpointSliceLister
	selector                 labels.Selector
	synced                   atomic.Bool
}

// NewKubernetes prepares the informer; Run starts it.
func NewKubernetes(client kubernetes.Interface, namespace, serviceName, port string, log *slog.Logger) *Kubernetes {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	selector := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: serviceName})
	// No periodic resync: the watch delivers every change, and Func reads the
	// cache, never the handlers.
	f := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector.String() }),
	)
	eps := f.Discovery().V1().EndpointSlices()
	return &Kubernetes{
		namespace: namespace, service: serviceName, port: port, log: log,
		factory: f, informer: eps.Informer(), lister: eps.Lister(), selector: selector,
	}
}

// Run runs the informer until ctx is done.
func (k *Kubernetes) Run(ctx context.Context) error {
	k.factory.Start(ctx.Done())
	defer k.factory.Shutdown()
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
		list, err := k.lister.EndpointSlices(k.namespace).List(k.selector)
		if err != nil {
			return nil, fmt.Errorf("kubernetes bootstrap: %w", err)
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

// InClusterClient is a client from the pod's service account.
func InClusterClient() (kubernetes.Interface, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes bootstrap: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}
