import { defineConfig } from "vitest/config"
import { browserProject } from "../../vitest.browser.shared.js"

export default defineConfig(browserProject("tfjs-browser"))
