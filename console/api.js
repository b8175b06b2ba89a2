// The HTTP API of sdsim as the console uses it: JSON in and out, errors as ApiError, and the
// session (access token, single-use refresh token) kept fresh.
//
// Refresh rotation: every refresh spends the refresh token and returns a new pair. Presenting a
// spent token again revokes the whole session (the server takes it for a leak), so at most one
// refresh is ever in flight and every caller waits for that one.

const STORAGE_KEY = 'sdsim.console.session';

/** An answer that was not 2xx, with the server's error code and, for designs, its problems. */
export class ApiError extends Error {
  constructor(status, code, message, problems = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.problems = problems;
  }
}

let session = load();
let refreshing = null;
let refreshTimer = null;
const listeners = new Set();

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORAGE_KEY)) || null;
  } catch {
    return null;
  }
}

function save(next) {
  session = next;
  if (next) {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(next));
  } else {
    sessionStorage.removeItem(STORAGE_KEY);
  }
  schedule();
  for (const listener of listeners) listener(next);
}

/** Calls `listener(session or null)` whenever the session changes (sign in, refresh, sign out). */
export function onSession(listener) {
  listeners.add(listener);
}

/** The current session: `{access, refresh, expiresAt, user}`, or null when signed out. */
export function current() {
  return session;
}

function fromTokens(body, user) {
  return {
    access: body.access_token,
    refresh: body.refresh_token,
    // The server's lifetime, counted from when the answer arrived (clocks may disagree).
    expiresAt: Date.now() + body.expires_in * 1000,
    lifetimeMs: body.expires_in * 1000,
    user: body.user || user,
  };
}

// Refresh when four fifths of the token's life have passed (at least 5 s before it ends).
function schedule() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if (!session) return;
  const lead = Math.max(5000, session.lifetimeMs / 5);
  const wait = Math.max(0, session.expiresAt - lead - Date.now());
  refreshTimer = setTimeout(() => refresh().catch(() => {}), wait);
}

/** Rotates the tokens now; concurrent callers share one request. Signs out when refused. */
export function refresh() {
  if (!session) return Promise.reject(new ApiError(401, 'unauthenticated', 'signed out'));
  if (!refreshing) {
    const spent = session.refresh;
    refreshing = call('POST', '/api/auth/refresh', { refresh_token: spent }, { auth: false })
      .then((body) => save(fromTokens(body, session && session.user)))
      .catch((e) => {
        if (e.status === 401 || e.status === 400) save(null);
        throw e;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

/** A valid access token: refreshed first when it is about to expire. */
export async function accessToken() {
  if (!session) throw new ApiError(401, 'unauthenticated', 'signed out');
  if (session.expiresAt - Date.now() < 5000) await refresh();
  return session.access;
}

async function call(method, path, body, { auth = true } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth) headers.Authorization = `Bearer ${await accessToken()}`;
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) {
    const err = (json && json.error) || {};
    throw new ApiError(
      resp.status,
      err.code || `http_${resp.status}`,
      err.message || `${method} ${path} answered ${resp.status}`,
      err.problems || [],
    );
  }
  return json;
}

/** An authenticated request; a 401 (token revoked or expired meanwhile) refreshes once. */
export async function request(method, path, body) {
  try {
    return await call(method, path, body);
  } catch (e) {
    if (e.status !== 401 || !session) throw e;
    await refresh();
    return call(method, path, body);
  }
}

export async function register(email, password) {
  return call('POST', '/api/auth/register', { email, password }, { auth: false });
}

export async function signIn(email, password) {
  const body = await call('POST', '/api/auth/login', { email, password }, { auth: false });
  save(fromTokens(body));
  return session;
}

/** Revokes the session on the server (best effort) and forgets it here. */
export async function signOut() {
  if (session) {
    try {
      await call('POST', '/api/auth/logout');
    } catch {
      // Signed out here whatever the server said: the tokens are dropped below.
    }
  }
  save(null);
}

export const templates = () => request('GET', '/api/templates');
export const projects = () => request('GET', '/api/projects?per_page=100');
export const project = (id) => request('GET', `/api/projects/${encodeURIComponent(id)}`);
export const createProject = (name, templateId) =>
  request('POST', '/api/projects', { name, template_id: templateId });
export const saveDesign = (id, design, expectedVersion) =>
  request('PUT', `/api/projects/${encodeURIComponent(id)}`, {
    design,
    expected_version: expectedVersion,
  });
export const validate = (design) => request('POST', '/api/simulations/validate', { design });
export const startRun = (projectId, durationS, speed) =>
  request('POST', '/api/simulations', { project_id: projectId, duration_s: durationS, speed });
export const run = (id) => request('GET', `/api/simulations/${encodeURIComponent(id)}`);
export const runs = (projectId) =>
  request('GET', `/api/simulations?project_id=${encodeURIComponent(projectId)}&limit=20`);
export const results = (id) => request('GET', `/api/simulations/${encodeURIComponent(id)}/results`);
export const whatIf = (id, changes) =>
  request('PATCH', `/api/simulations/${encodeURIComponent(id)}`, { changes });

schedule();
