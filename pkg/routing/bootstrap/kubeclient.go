package bootstrap

import (
	"context"
	"fmt"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// restSlices is EndpointSlices over a REST client whose scheme knows only
// discovery.k8s.io/v1, so the binary does not carry every Kubernetes API.
type restSlices struct {
	client    rest.Interface
	namespace string
	params    runtime.ParameterCodec
}

// InClusterClient returns the EndpointSlices of namespace, read with the pod's
// service account.
func InClusterClient(namespace string) (EndpointSlices, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes bootstrap: %w", err)
	}
	return newRESTSlices(cfg, namespace)
}

func newRESTSlices(cfg *rest.Config, namespace string) (*restSlices, error) {
	scheme := runtime.NewScheme()
	if err := discoveryv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &discoveryv1.SchemeGroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = "shoal"
	}
	client, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes bootstrap: %w", err)
	}
	return &restSlices{client: client, namespace: namespace, params: runtime.NewParameterCodec(scheme)}, nil
}

func (r *restSlices) List(ctx context.Context, opts metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	out := &discoveryv1.EndpointSliceList{}
	err := r.client.Get().Namespace(r.namespace).Resource("endpointslices").
		VersionedParams(&opts, r.params).Do(ctx).Into(out)
	return out, err
}

func (r *restSlices) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return r.client.Get().Namespace(r.namespace).Resource("endpointslices").
		VersionedParams(&opts, r.params).Watch(ctx)
}
