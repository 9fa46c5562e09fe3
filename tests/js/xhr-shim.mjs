// The smallest XMLHttpRequest the 1.2-era LongPoll/Ajax code needs (open, setRequestHeader,
// send, timeout, onreadystatechange, onerror, ontimeout, readyState, status, responseText),
// over Node's fetch. Node has no XMLHttpRequest; browsers do.

// What came back, and what the client's callback threw (a failure report quotes the tail).
export const xhrLog = [];

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
          xhrLog.push(`${this.method} ${resp.status} ${this.responseText.slice(0, 240)}`);
          try {
            if (this.onreadystatechange) this.onreadystatechange();
          } catch (e) {
            xhrLog.push(`the client's callback threw: ${e && e.stack ? e.stack.split("\n").slice(0, 2).join(" ") : e}`);
            throw e;
          }
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
