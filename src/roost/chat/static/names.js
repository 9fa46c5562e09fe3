// The user's name: remembered in localStorage, and asked for on a first visit before the
// chat joins anything (so nobody ever sees a made-up name that changes a moment later).

const USER_KEY = "roost:user"
export const MAX_NAME = 32

const $ = id => document.getElementById(id)
const gate = {gate: $("name-gate"), form: $("name-form"), input: $("name-input"), error: $("name-error")}

export function storedName() {
  try {
    return localStorage.getItem(USER_KEY) || ""
  } catch {
    return ""
  }
}

export function rememberName(name) {
  try {
    localStorage.setItem(USER_KEY, name)
  } catch {
    // private mode: the name just is not remembered
  }
}

// a name the server would take: 1-32 characters, no control or bidi characters
export function nameProblem(name) {
  if (!name) return "type a name"
  if (name.length > MAX_NAME) return `at most ${MAX_NAME} characters`
  if (/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(name)) {
    return "that name has characters that are not allowed"
  }
  return ""
}

// the first visit: the name is asked for before anything is joined
export function askName() {
  return new Promise(resolve => {
    gate.gate.hidden = false
    gate.input.focus()
    gate.form.addEventListener("submit", function submit(event) {
      event.preventDefault()
      const name = gate.input.value.trim()
      const problem = nameProblem(name)
      gate.error.hidden = !problem
      gate.error.textContent = problem
      if (problem) return
      gate.form.removeEventListener("submit", submit)
      gate.gate.hidden = true
      resolve(name)
    })
  })
}
