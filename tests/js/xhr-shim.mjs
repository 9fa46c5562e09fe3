// The smallest XMLHttpRequest the 1.2-era LongPoll/Ajax code needs (open, setRequestHeader,
// send, timeout, onreadystatechange, onerror, ontimeout, readyState, status, responseText),
// over Node's fetch. Node has no XMLHttpRequest; browsers do.

export function installXMLHttpRequest(target) {
  class XMLHttpRequest {
    constructor() {
      this.readyState = 0;
      this.status = 0;
      this.responseText = "";
      this.timeout = 0;
      this.headers = {};
      this.onreadystatechange = null;
      this.onerror = null;
      this.ontimeout = null;
    }
    open(method, url) {
      this.method = method;
      this.url = url;
      this.readyState = 1;
    }
    setRequestHeader(name, value) {
      this.headers[name] = value;
    }
    abort() {
      if (this.controller) this.controller.abort();
    }
    send(body) {
      this.controller = new AbortController();
      let timedOut = false;
      const timer = this.timeout > 0 ? setTimeout(() => { timedOut = true; this.controller.abort(); }, this.timeout) : null;
      fetch(this.url, { method: this.method, headers: this.headers, body: body ?? undefined, signal: this.controller.signal })
        .then(async (resp) => {
          this.status = resp.status;
          this.responseText = await resp.text();
          if (timer) clearTimeout(timer);
          this.readyState = 4;
          if (this.onreadystatechange) this.onreadystatechange();
        })
        .catch(() => {
          if (timer) clearTimeout(timer);
          if (timedOut && this.ontimeout) this.ontimeout();
          else if (!timedOut && this.onerror) this.onerror();
        });
    }
  }
  target.XMLHttpRequest = XMLHttpRequest;
  globalThis.XMLHttpRequest = XMLHttpRequest;
}
