// Package advertiser announces what the node's containerd holds, so that other
// nodes find it through the DHT.
//
// The keys are the digests of every blob of every image in one containerd
// namespace that is present in the content store (index, manifests, configs,
// layers), plus one tag key per tagged image name ("<registry>/<repo>:<tag>",
// see TagKey). The manifests are read to find the children: garbage-collection
// labels are written late and are not needed.
//
// Three sources keep the set true:
//   - containerd events: image create/update/delete re-walk one image, and
//     content create (containerd 2.x) advertises a blob the moment it is
//     committed, before the image record exists, which keeps the delay between
//     a pull on this node and a peer finding the layer small;
//   - short re-walks of an image after its event, for content committed after
//     the image record;
//   - a periodic full resync, because garbage collection deletes content
//     without events, and because containerd 1.6 sends no content events.
//
// Every walk only updates the wanted set; a level-triggered reconciler then
// advertises and withdraws the difference against what the Router was told,
// one key at a time in order, many keys in parallel.
//
// Every key is held once, in the key table (keytab.go): a sha256 digest as
// its 32 bytes, with the facts about it (which images hold it, its orphan
// clock, its content listings, its Router state) in one entry. Images hold
// 4-byte ids into it, and a key leaves it when nothing holds it any more.
package advertiser
