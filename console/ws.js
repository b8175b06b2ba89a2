// One channel of sdsim's WebSocket (`/ws`), followed through dropped connections: the token
// goes in the subprotocol list (browsers cannot set headers), and a reconnect subscribes with
// the last `seq` and `epoch` seen, so the server replays what was missed (`recovered: true`) or
// says it cannot (`recovered: false`: the points in between are lost, the next ones still come).

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 5000;

export class LiveChannel {
  /**
   * @param channel   the channel name, e.g. `simulation:data:<id>`
   * @param token     async () => a valid access token
   * @param onEvent   (data, seq) for each event, in order, never twice
   * @param onStatus  (text) when the connection's state changes, for the person watching
   */
  constructor({ channel, token, onEvent, onStatus }) {
    this.channel = channel;
    this.token = token;
    this.onEvent = onEvent;
    this.onStatus = onStatus || (() => {});
    this.lastSeq = 0;
    this.epoch = null;
    this.socket = null;
    this.stopped = false;
    this.backoff = MIN_BACKOFF_MS;
    this.reconnects = 0;
    this.replaying = false;
  }

  start() {
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.socket) this.socket.close(1000, 'done');
  }

  async connect() {
    if (this.stopped) return;
    let token;
    try {
      token = await this.token();
    } catch {
      this.onStatus('signed out: live updates stopped');
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(`${scheme}//${location.host}/ws`, ['sdsim.v1', `bearer.${token}`]);
    this.socket = socket;
    socket.onopen = () => {
      const subscribe = { op: 'subscribe', channel: this.channel, since: this.lastSeq };
      if (this.epoch) subscribe.epoch = this.epoch;
      socket.send(JSON.stringify(subscribe));
    };
    socket.onmessage = (message) => this.receive(socket, message.data);
    socket.onclose = () => {
      if (this.socket !== socket || this.stopped) return;
      this.reconnects += 1;
      this.onStatus(`connection lost; reconnecting (attempt ${this.reconnects})`);
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    };
  }

  receive(socket, text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (this.socket !== socket) return;
    if (msg.op === 'subscribed') {
      this.backoff = MIN_BACKOFF_MS;
      const resumed = this.lastSeq > 0;
      if (resumed && !msg.recovered) {
        this.onStatus('reconnected; points sent while disconnected are no longer kept');
      } else {
        this.onStatus(resumed ? 'reconnected; missed points recovered' : 'live');
      }
      this.epoch = msg.epoch || this.epoch;
    } else if (msg.op === 'event' && msg.channel === this.channel) {
      if (msg.seq <= this.lastSeq) return;
      if (this.lastSeq > 0 && msg.seq > this.lastSeq + 1 && !this.replaying) {
        // The server dropped events for this connection (a full queue): resubscribe on a
        // fresh connection from the last one delivered, so the history fills the gap.
        this.replaying = true;
        socket.close(4000, 'gap');
        return;
      }
      this.replaying = false;
      this.lastSeq = msg.seq;
      this.onEvent(msg.data, msg.seq);
    } else if (msg.op === 'error') {
      this.onStatus(`live channel error: ${msg.message || msg.code}`);
    }
  }
}
