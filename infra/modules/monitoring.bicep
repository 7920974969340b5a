// Log Analytics + workspace-based Application Insights. Local (instrumentation-key) auth is off:
// the app's identity sends telemetry with Monitoring Metrics Publisher (modules/roles.bicep).
param location string
param tags object
param workspaceName string
param applicationInsightsName string
param retentionInDays int

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-02-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
  }
}

output workspaceName string = workspace.name
output workspaceCustomerId string = workspace.properties.customerId
output applicationInsightsName string = applicationInsights.name
