package advertiser

import (
	"context"
	"fmt"
	"io"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// callTimeout bounds each containerd call, so a hung daemon stalls one walk,
// never the advertiser.
const callTimeout = 10 * time.Second

// Event topics the advertiser follows. containerd 2.x publishes content
// create when a blob is committed (and content delete on an explicit delete,
// not on garbage collection); 1.6 publishes neither, see the package doc.
const (
	topicImageCreate   = "/images/create"
	topicImageUpdate   = "/images/update"
	topicImageDelete   = "/images/delete"
	topicContentCreate = "/content/create"
	topicContentDelete = "/content/delete"
)

// event is a decoded containerd event: an image name or a blob digest.
type event struct {
	topic  string
	name   string // image events
	digest string // content events
}

// backend is what the advertiser needs from containerd; tests replace it.
type backend interface {
	blobSource
	image(ctx context.Context, name string) (images.Image, error)
	images(ctx context.Context) ([]images.Image, error)
	// contents streams every committed blob with its size to fn, without
	// holding the listing in memory.
	contents(ctx context.Context, fn func(digest.Digest, int64)) error
	// ingesting reports whether a download is in progress.
	ingesting(ctx context.Context) (bool, error)
	// subscribe streams events of the namespace. The error channel yields
	// once when the stream ends; nothing more is sent after it.
	subscribe(ctx context.Context) (<-chan event, <-chan error)
}

// containerdBackend reads one namespace of a containerd.
type containerdBackend struct {
	client *containerd.Client
	ns     string
}

func (b *containerdBackend) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(namespaces.WithNamespace(ctx, b.ns), callTimeout)
}

func (b *containerdBackend) info(ctx context.Context, dgst digest.Digest) (int64, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	i, err := b.client.ContentStore().Info(ctx, dgst)
	return i.Size, err
}

func (b *containerdBackend) read(ctx context.Context, dgst digest.Digest, size, limit int64) ([]byte, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	ra, err := b.client.ContentStore().ReaderAt(ctx, ocispec.Descriptor{Digest: dgst, Size: size})
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	if ra.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, over the %d limit", dgst, ra.Size(), limit)
	}
	buf := make([]byte, ra.Size())
	if _, err := ra.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return buf, nil
}

func (b *containerdBackend) image(ctx context.Context, name string) (images.Image, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.client.ImageService().Get(ctx, name)
}

func (b *containerdBackend) images(ctx context.Context) ([]images.Image, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.client.ImageService().List(ctx)
}

func (b *containerdBackend) contents(ctx context.Context, fn func(digest.Digest, int64)) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return b.client.ContentStore().Walk(ctx, func(i content.Info) error {
		fn(i.Digest, i.Size)
		return nil
	})
}

func (b *containerdBackend) ingesting(ctx context.Context) (bool, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	st, err := b.client.ContentStore().ListStatuses(ctx)
	return len(st) > 0, err
}

func (b *containerdBackend) subscribe(ctx context.Context) (<-chan event, <-chan error) {
	var filters []string
	for _, t := range []string{topicImageCreate, topicImageUpdate, topicImageDelete, topicContentCreate, topicContentDelete} {
		filters = append(filters, fmt.Sprintf("topic==%q,namespace==%q", t, b.ns))
	}
	envs, errs := b.client.EventService().Subscribe(ctx, filters...)
	out := make(chan event)
	// The client never closes envs: errs ends the stream, and the caller then
	// cancels ctx, which ends this goroutine.
	go func() {
		for {
			select {
			case env := <-envs:
				if ev, ok := decode(env.Namespace, b.ns, env.Event); ok {
					select {
					case out <- ev:
					case <-ctx.Done():
						return
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, errs
}

// decode turns an envelope of our namespace into an event.
func decode(ns, want string, payload typeurl.Any) (event, bool) {
	if ns != want || payload == nil {
		return event{}, false
	}
	v, err := typeurl.UnmarshalAny(payload)
	if err != nil {
		return event{}, false
	}
	switch e := v.(type) {
	case *eventstypes.ImageCreate:
		return event{topic: topicImageCreate, name: e.Name}, true
	case *eventstypes.ImageUpdate:
		return event{topic: topicImageUpdate, name: e.Name}, true
	case *eventstypes.ImageDelete:
		return event{topic: topicImageDelete, name: e.Name}, true
	case *eventstypes.ContentCreate:
		return event{topic: topicContentCreate, digest: e.Digest}, true
	case *eventstypes.ContentDelete:
		return event{topic: topicContentDelete, digest: e.Digest}, true
	}
	return event{}, false
}
