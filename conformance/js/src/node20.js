// Node.js 20 (Debian's `nodejs`) lacks Promise.withResolvers (Node 22), which some of js-libp2p's
// dependencies (it-queue, mortice, abort-error) call; this adds the standard one where missing.
// Imported first by peer.js, before libp2p.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
